"""Sinks: where results go (JSONL, annotated video, Python callbacks)."""

from tapetum.sinks.base import Sink
from tapetum.sinks.callback import CallbackSink
from tapetum.sinks.jsonl import JsonlSink
from tapetum.sinks.video import AnnotatedVideoSink

__all__ = ["AnnotatedVideoSink", "CallbackSink", "JsonlSink", "Sink"]
