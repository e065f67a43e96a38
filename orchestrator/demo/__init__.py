"""`rlguard demo`: a guarded PPO run that collapses and recovers, beside its unguarded twin.

    spec.py     the demo's run config (model, prompts, reward, ladder) and where it collapses
    run.py      the CLI: runs the guarded (and --compare unguarded) run, then the gold evaluation
    narrate.py  tells, as it happens, what the detectors saw and what the policies did
    gold.py     held-out checks a person would agree with: repetition, empty answers, gibberish,
                reference perplexity, on the 48 prompts of gold_prompts.jsonl (none trained on)
    report.py   OUT/demo_report.html: what caught it, the goals, every held-out answer with its flags
"""
