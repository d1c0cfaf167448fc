"""Decoder rules (brief test 8) on scripted logits."""

import torch

from experiments.careless_whisper.decode import first_unstable


def rows_with(values: dict[tuple[int, int], float], n: int, vocab: int = 6) -> torch.Tensor:
    rows = torch.zeros(n, vocab)
    for (i, t), v in values.items():
        rows[i, t] = v
    return rows


def test_a_tail_token_is_dropped_only_when_its_logit_fell_and_it_lost_the_argmax():
    tokens, previous = [1, 2, 3], [5.0, 5.0, 5.0]
    # token 3 (last): logit fell 5 -> 4 but is still the argmax: stable
    assert first_unstable(tokens, previous, rows_with({(0, 1): 9, (1, 2): 9, (2, 3): 4.0}, 3), 2) is None
    # token 3: logit fell and another token is now the argmax: dropped
    assert first_unstable(tokens, previous, rows_with({(0, 1): 9, (1, 2): 9, (2, 3): 4.0, (2, 4): 4.5}, 3), 2) == 2
    # token 2: logit rose although it is not the argmax: stable
    assert first_unstable(tokens, previous, rows_with({(1, 2): 6.0, (1, 5): 7.0, (2, 3): 9}, 3), 2) is None
    # the middle token breaks first: everything from it on goes
    assert first_unstable(tokens, previous, rows_with({(1, 2): 1.0, (1, 5): 7.0, (2, 4): 9}, 3), 2) == 1


def test_tokens_older_than_the_look_back_are_committed():
    tokens, previous = [1, 2, 3, 4], [5.0] * 4
    rows = rows_with({(0, 0): 9.0, (2, 3): 9, (3, 4): 9}, 4)  # token 1 collapsed completely
    assert first_unstable(tokens, previous, rows, 2) is None
    assert first_unstable(tokens, previous, rows, 4) == 0
