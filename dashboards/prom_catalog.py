"""The Prometheus names rlguard exports: one table shared by the exporter, the Grafana
generator, the alert rules' tests and the README, so that they cannot drift apart.

Naming (docs/OPS.md): one prefix `rlguard_`, base units, `_total` only on counters,
`*_timestamp_seconds` gauges for "last X happened at", run metadata in `rlguard_run_info`,
`run_id` on every series and never a step number, sample id or path as a label.

Per-step metrics of docs/METRICS.md become one gauge family each, named
`rlguard_<metric name>` (so `kl` -> `rlguard_kl`): the mapping a user guesses right.
A metric name the table does not know (a trainer's own metric) goes to the one family
`rlguard_extra_metric{metric="<original name>"}` rather than to a family named after it:
arbitrary names could collide after sanitizing (`a/b` and `a_b`), could clash with the
exporter's own families, and every new name would be a new family in Grafana. The label
keeps the original spelling; a cap on distinct names bounds the cardinality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "rlguard_"


@dataclass(frozen=True)
class StepMetric:
    """One per-step metric of docs/METRICS.md and the gauge family it is exported as.

    name: the metric name in the event stream (`kl`).
    help: the HELP text (formula and unit, short).
    group: the Grafana row it is drawn in.
    """

    name: str
    help: str
    group: str

    @property
    def family(self) -> str:
        return PREFIX + self.name


# Order matters only for the Grafana layout and the README table.
STEP_METRICS: tuple[StepMetric, ...] = (
    # The four the PPO paper says to watch.
    StepMetric("reward", "Mean raw reward-model score of the batch's responses (RM units).", "health"),
    StepMetric("kl", "Mean per-token KL(policy || reference), k1 estimator (nats per token).", "health"),
    StepMetric("perplexity", "Perplexity of the sampled responses under the policy.", "health"),
    StepMetric("response_length", "Mean generated tokens per response, EOS included.", "health"),
    # Further standard names.
    StepMetric("reward_std", "Standard deviation of the raw scores in the batch (RM units).", "health"),
    StepMetric("kl_seq", "Mean summed per-response KL to the reference (nats per response).", "health"),
    StepMetric("ref_perplexity", "Perplexity of the sampled responses under the reference model.", "health"),
    StepMetric("entropy", "Mean per-token entropy of the policy at response positions (nats).", "health"),
    StepMetric(
        "truncated_fraction", "Share of responses that hit the length limit without EOS (0-1).", "health"
    ),
    StepMetric("distinct_2", "Distinct bigrams / total bigrams over the batch's responses (0-1).", "health"),
    StepMetric("policy_loss", "PPO clipped surrogate loss, mean over the step's minibatches.", "optimizer"),
    StepMetric("value_loss", "Clipped value loss, mean over the step's minibatches.", "optimizer"),
    StepMetric("clipfrac", "Share of tokens whose probability ratio was clipped (0-1).", "optimizer"),
    StepMetric("approx_kl", "k3 estimate of KL(old policy, new policy) over the step (nats).", "optimizer"),
    StepMetric("grad_norm", "Global gradient norm before clipping.", "optimizer"),
    StepMetric("lr", "Learning rate in force this step.", "constraints"),
    StepMetric("kl_coef", "KL penalty coefficient in force this step.", "constraints"),
    StepMetric("clip_range", "PPO clip range in force this step.", "constraints"),
    StepMetric("step_seconds", "Wall time of the last step (seconds).", "throughput"),
    StepMetric("tokens_per_second", "Generated tokens per second in the last step.", "throughput"),
    StepMetric("checkpoint_failures", "Checkpoints the worker process failed to write so far (0 again after a "
               "relaunch): rollback targets missing.", "throughput"),
    # Held-out evaluation (every few steps).
    StepMetric("eval_reward", "Held-out mean raw reward (RM units).", "eval"),
    StepMetric("eval_kl", "Held-out mean per-token KL to the reference (nats per token).", "eval"),
    StepMetric("eval_ref_perplexity", "Held-out perplexity under the reference model.", "eval"),
    StepMetric("eval_response_length", "Held-out mean generated tokens per response.", "eval"),
    StepMetric("eval_distinct_2", "Held-out distinct bigram ratio (0-1).", "eval"),
    StepMetric("eval_reward_skew", "Skewness of the held-out per-prompt reward distribution.", "eval"),
    StepMetric("eval_reward_p90", "90th percentile of the held-out per-prompt rewards (RM units).", "eval"),
)

STEP_METRICS_BY_NAME: dict[str, StepMetric] = {m.name: m for m in STEP_METRICS}

EXTRA_METRIC_FAMILY = PREFIX + "extra_metric"

# Run states exported as a state set (`rlguard_run_state{state=...}` 1 for the current one,
# 0 for the others). Listed up front so that `rlguard_run_state{state="halted"} == 1` has a
# series to compare before the run ever halts; a state the supervisor reports that is not
# listed here is added when first seen.
RUN_STATES: tuple[str, ...] = (
    # The values of orchestrator.state.RunState (a test keeps them in step).
    "init",
    "starting",
    "running",
    "paused",
    "rolling_back",
    "restarting",
    "completed",
    "halted",
    "failed",
    "detached",
    "unknown",
)

# The exporter's own families (besides the per-step gauges), with their Prometheus type.
# The names the rules, the Grafana dashboard and the README use; the exporter's test checks
# that the exposition contains exactly these.
OWN_FAMILIES: dict[str, tuple[str, str]] = {
    # name: (type, help)
    "rlguard_run_info": ("info", "Run metadata: model, preset, config hash (value always 1)."),
    "rlguard_run_state": ("stateset", "Supervisor run state: 1 for the current state, 0 for the others."),
    "rlguard_run_start_timestamp_seconds": ("gauge", "When the exporter for this run was created."),
    "rlguard_step": ("gauge", "Latest optimizer step reported (goes back after a rollback)."),
    "rlguard_attempt": ("gauge", "Attempt number of the latest event (+1 per rollback or restart)."),
    "rlguard_last_step_timestamp_seconds": ("gauge", "When the latest step finished (event time)."),
    "rlguard_steps_total": ("counter", "Steps reported (events received), across attempts."),
    "rlguard_step_duration_seconds": ("histogram", "Wall time per optimizer step."),
    "rlguard_nonfinite_metrics": ("gauge", "Metrics of the latest event whose value is NaN or +-Inf."),
    "rlguard_nonfinite_values_total": ("counter", "Non-finite metric values received."),
    EXTRA_METRIC_FAMILY: ("gauge", "Latest value of a metric outside docs/METRICS.md (label: metric)."),
    "rlguard_extra_metrics_dropped_total": (
        "counter",
        "Values of unlisted metrics not exported because the cap on distinct names was reached.",
    ),
    "rlguard_kl_budget": (
        "gauge",
        "The KL budget (nats per token) the KL alert rule compares rlguard_kl to.",
    ),
    "rlguard_alerts_total": ("counter", "Monitor alerts raised, by severity."),
    "rlguard_alerts_by_detector_total": ("counter", "Monitor alerts raised, by detector, code and severity."),
    "rlguard_last_alert_timestamp_seconds": ("gauge", "When the latest alert of each severity was raised."),
    "rlguard_decisions_total": ("counter", "Policy decisions taken, by action and mode."),
    "rlguard_decision_outcomes_total": ("counter", "Decisions carried out, by action and outcome."),
    "rlguard_rollbacks_total": ("counter", "Rollbacks carried out."),
    "rlguard_last_rollback_timestamp_seconds": ("gauge", "When the latest rollback was carried out."),
    "rlguard_restarts_total": ("counter", "Worker restarts by the supervisor."),
    "rlguard_checkpoints_written_total": ("counter", "Checkpoints written."),
    "rlguard_checkpoints": ("gauge", "Checkpoints known to the supervisor, by health."),
    "rlguard_last_checkpoint_timestamp_seconds": ("gauge", "When the latest checkpoint was written."),
    "rlguard_last_checkpoint_step": ("gauge", "Step of the latest checkpoint written."),
    "rlguard_last_healthy_checkpoint_step": ("gauge", "Step of the newest healthy checkpoint (-1: none)."),
    "rlguard_detection_armed": (
        "gauge",
        "1 when the metrics logged so far arm detection of a failure class (label class), 0 when one it "
        "needs is missing (docs/METRICS.md coverage table).",
    ),
    "rlguard_notification_failures_total": (
        "counter",
        "Notifications (webhook, Alertmanager push) given up on or dropped, by target.",
    ),
}

_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A valid Prometheus label name for an arbitrary key (`config-hash` -> `config_hash`)."""
    name = _INVALID_LABEL_CHARS.sub("_", str(key)) or "_"
    if name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):  # reserved for Prometheus' own labels
        name = "x" + name
    return name


def all_family_names() -> list[str]:
    """Every family the exporter can expose, per-step gauges first."""
    return [m.family for m in STEP_METRICS] + list(OWN_FAMILIES)
