"""Metric stream in, alerts out: detect collapse early without crying wolf. Pure Python, no torch.

Modules (one concept each):
  events.py       MetricEvent and line parsing (docs/METRICS.md)
  reader.py       EventReader: files (tailing, torn lines), iterables, in-process; bad lines counted
  config.py       MonitorConfig (pydantic, YAML, every field documented; the defaults are the profile)
  track.py        MetricTrack: per-metric lagged robust baseline, robust z, whitened CUSUM, established level
  calibration.py  CUSUM threshold from a target false-alarm rate (Siegmund + measured inflation)
  incidents.py    one alert per (detector, metric) incident, re-armed after recovery
  detectors.py    non-finite, bounds, spike, change point, drift (single metric: warning at most,
                  except non-finite and user bounds)
  patterns.py     compound failure patterns (collapse, empty answers, gibberish, negative KL,
                  KL runaway: critical) and the eval reward distribution shape
  stall.py        no events for too long
  stack.py        MonitorStack: all of it behind update(event) / check_stall(now)
  replay.py       `rlguard replay`; cli.py: `rlguard monitors`
"""
