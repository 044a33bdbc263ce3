import pytest

from tapetum._optional import import_optional
from tapetum.errors import MissingDependencyError, TapetumError


def test_present_module_is_returned() -> None:
    assert import_optional("json", "dev", "a test").dumps([1]) == "[1]"


def test_missing_module_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'tapetum\[identity\]'") as err:
        import_optional("no_such_module_xyz", "identity", "the gallery")
    assert isinstance(err.value, TapetumError)  # the CLI prints it as one line
    assert "the gallery needs the 'no_such_module_xyz' package" in str(err.value)
