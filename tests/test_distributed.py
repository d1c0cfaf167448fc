"""shared.distributed: the helpers every data-parallel trainer uses (the gloo DDP run itself is
tested in experiments/streamdit/tests/test_train.py)."""

import pytest
import torch

from shared.distributed import collective_device, parameter_checksum, warmup_cosine


def test_warmup_then_cosine_to_zero():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1) and warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0) and warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_the_checksum_sees_a_changed_parameter():
    model = torch.nn.Linear(3, 2)
    before = parameter_checksum(model)
    with torch.no_grad():
        model.weight[1, 2] += 1e-3
    assert parameter_checksum(model) != before



def test_the_rank_agreement_check_hands_nccl_a_cuda_tensor():
    """NCCL refuses CPU tensors: the end-of-training check all-gathered a CPU checksum, which the
    gloo test above cannot see. The device it uses must follow the backend."""

    assert collective_device("nccl", 3) == torch.device("cuda", 3)
    assert collective_device("gloo", 3) == torch.device("cpu")

