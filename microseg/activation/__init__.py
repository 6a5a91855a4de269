"""Activation: triggers (triggers.yml), frequency caps, decay and delivery."""

from microseg.activation.grammar import Trigger, TriggerFile, load_triggers
from microseg.activation.report import print_report, print_run, report_rows
from microseg.activation.run import ActivationRun, Window, activate

__all__ = [
    "ActivationRun",
    "Trigger",
    "TriggerFile",
    "Window",
    "activate",
    "load_triggers",
    "print_report",
    "print_run",
    "report_rows",
]
