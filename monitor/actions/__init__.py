"""Actions: what the monitor does when an alert with an `action` label fires
(rollback, retrain, reevaluate), or when someone asks (promote, rollback, approve).
See docs/actions.md."""
