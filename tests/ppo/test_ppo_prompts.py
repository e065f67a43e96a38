"""Prompt files and the reproducible data cursor."""

import json

import pytest

from rlguard.ppo.prompts import DataCursor, DataError, load_texts


def test_builtin_sets_are_shipped_and_disjoint():
    train, evals = load_texts("builtin"), load_texts("builtin", builtin_name="eval_prompts.jsonl")
    assert 90 <= len(train) <= 120 and 12 <= len(evals) <= 20
    assert not set(train) & set(evals)


def test_jsonl_and_txt(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text(json.dumps({"prompt": "a b"}) + "\n\n" + json.dumps({"prompt": "c", "id": 2}) + "\n")
    assert load_texts(str(j)) == ["a b", "c"]
    t = tmp_path / "p.txt"
    t.write_text("one\n\ntwo words\n")
    assert load_texts(str(t)) == ["one", "two words"]


@pytest.mark.parametrize("lines, reason", [
    (['{"prompt": "ok"}', '{"prompt": "broken"'], "p.jsonl:2: not JSON"),
    (['{"prompt": "ok"}', '{"text": "x"}'], "p.jsonl:2: expected an object with a string 'prompt' field"),
    (['{"prompt": "ok"}', "", '{"prompt": 3}'], "p.jsonl:3: expected"),
    (['{"prompt": "  "}'], "p.jsonl:1: 'prompt' is empty"),
])
def test_broken_line_names_file_and_line(tmp_path, lines, reason):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_texts(str(f))
    assert reason in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_texts(str(tmp_path / "nope.jsonl"))
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no items"):
        load_texts(str(tmp_path / "e.txt"))


def test_cursor_is_a_reproducible_walk_that_resumes_and_skips():
    items = [f"p{i}" for i in range(7)]
    a = DataCursor(items, seed=3)
    first_epoch = a.next_batch(4) + a.next_batch(3)
    assert sorted(first_epoch) == sorted(items)  # each epoch visits every item once
    later = [a.next_batch(4) for _ in range(3)]
    b = DataCursor(items, seed=3)
    b.load_state_dict({"position": 7, "seed": 3, "size": 7})
    assert [b.next_batch(4) for _ in range(3)] == later
    c = DataCursor(items, seed=3)
    c.skip(2, 4)
    d = DataCursor(items, seed=3)
    d.next_batch(4), d.next_batch(4)
    assert c.next_batch(4) == d.next_batch(4)
    assert DataCursor(items, seed=4).next_batch(7) != first_epoch
    with pytest.raises(DataError, match="same prompts"):
        DataCursor(items, seed=3).load_state_dict({"position": 1, "size": 99})


def test_cursor_shards_a_global_batch_across_ranks():
    items = [f"p{i}" for i in range(20)]
    ranks = [DataCursor(items, seed=0, rank=r, world=2) for r in range(2)]
    single = DataCursor(items, seed=0)
    b0, b1 = ranks[0].next_batch(3), ranks[1].next_batch(3)
    assert not set(b0) & set(b1)
    assert sorted(b0 + b1) == sorted(single.next_batch(6))
