"""Pure decisions: functions of models and observed objects, with no I/O."""
