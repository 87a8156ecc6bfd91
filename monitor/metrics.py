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
ADAPTER_ACTIVE_INFO = "monitor_adapter_active_info"
ACTIONS_TOTAL = "monitor_actions_total"
ALERTS = "monitor_alerts"
RULES_LAST_RELOAD_SUCCESSFUL = "monitor_rules_last_reload_successful"
