"""`rlguard monitors`: show and check the detector settings.

    rlguard monitors --print-config            every field: dotted name, default, meaning
    rlguard monitors --print-config --yaml     the defaults as a YAML file to start from
    rlguard monitors --check my.yaml           validate a file (exit 2 naming the bad field)
"""

from __future__ import annotations

import argparse
import sys

import yaml

from rlguard.monitors.calibration import ESTIMATION_INFLATION, expected_delay, pipeline_threshold
from rlguard.monitors.config import MonitorConfig, MonitorConfigError, load_monitor_config
from rlguard.monitors.describe import describe_fields


def print_config(cfg: MonitorConfig, out=None) -> None:
    out = out if out is not None else sys.stdout
    for key, default, doc in describe_fields(cfg):
        if default == "":
            out.write(f"\n[{key}] {doc}\n")
        else:
            out.write(f"{key} = {default}\n    {doc}\n")
    cp = cfg.change_point
    k = cp.shift_sigma / 2
    h = pipeline_threshold(cp.target_arl_steps, k)
    out.write(f"\nderived: change_point CUSUM k = {k:g}, h = {h:.3f} (Siegmund, in-control ARL "
              f"{cp.target_arl_steps:g} steps per metric); expected delay for a {cp.shift_sigma:g}-sigma shift "
              f"~{expected_delay(h, k, cp.shift_sigma):.1f} steps, 3-sigma ~{expected_delay(h, k, 3.0):.1f}; h includes the "
              f"x{ESTIMATION_INFLATION:g} correction for baseline-estimation error (monitors/calibration.py)\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlguard monitors", description="show and check the detector settings")
    p.add_argument("--print-config", action="store_true", help="list every field with its default and meaning")
    p.add_argument("--yaml", action="store_true", help="with --print-config: print the settings as YAML")
    p.add_argument("--check", metavar="FILE", help="validate a monitor config YAML file")
    p.add_argument("--config", metavar="FILE", help="with --print-config: show this file's values instead of defaults")
    args = p.parse_args(argv)
    try:
        cfg = load_monitor_config(args.check or args.config)
    except MonitorConfigError as e:
        print(f"rlguard monitors: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.check}: valid monitor config")
        if not args.print_config:
            return 0
    if args.print_config:
        if args.yaml:
            sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        else:
            print_config(cfg)
        return 0
    p.print_help()
    return 0
