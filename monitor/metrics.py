"""Metric names and label names: the one source of truth (DESIGN.md §4)."""

RECORDS_TOTAL = "monitor_records_total"
RECORDS_REJECTED_TOTAL = "monitor_records_rejected_total"
WINDOW_SAMPLES = "monitor_window_samples"
QUALITY = "monitor_quality"
LATENCY_SECONDS = "monitor_latency_seconds"
CONSUMER_LAG = "monitor_consumer_lag"
BUILD_INFO = "monitor_build_info"

# Names used by later parts of the pipeline, kept here so that rules and
# dashboards have one vocabulary.
DRIFT_SCORE = "monitor_drift_score"
DRIFT_PVALUE = "monitor_drift_pvalue"
DRIFT_DETECTED = "monitor_drift_detected"
GOLDEN_SCORE = "monitor_golden_score"
GOLDEN_DELTA = "monitor_golden_delta"
GOLDEN_REGRESSION = "monitor_golden_regression"
EVAL_LAST_SUCCESS = "monitor_eval_last_success_timestamp_seconds"
EVAL_DURATION = "monitor_eval_duration_seconds"
EVAL_QUEUE_LENGTH = "monitor_eval_queue_length"  # label state: queued | running
ADAPTER_ACTIVE_INFO = "monitor_adapter_active_info"
ACTIONS_TOTAL = "monitor_actions_total"
ALERTS = "monitor_alerts"
RULES_LAST_RELOAD_SUCCESSFUL = "monitor_rules_last_reload_successful"

# The rule evaluator and alert delivery (docs/rules.md).
RULE_EVALUATIONS = "monitor_rule_evaluations_total"
RULE_EVALUATION_FAILURES = "monitor_rule_evaluation_failures_total"
RULE_GROUP_DURATION = "monitor_rule_group_last_duration_seconds"
SERIES_STORE_SERIES = "monitor_rule_series"
ALERT_NOTIFICATIONS_SENT = "monitor_alert_notifications_sent_total"
ALERT_NOTIFICATIONS_FAILED = "monitor_alert_notifications_failed_total"
ALERT_NOTIFICATIONS_DROPPED = "monitor_alert_notifications_dropped_total"
ALERT_QUEUE_LENGTH = "monitor_alert_queue_length"
