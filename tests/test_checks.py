import numpy as np
import pytest
import torch
from torch import nn

from helpers.checks import CheckError, assert_close, check_exercise, check_function, check_module, compare


def test_equal_tensors_pass():
    x = torch.randn(3, 4)
    assert compare(x, x.clone())
    assert_close(x, x + 1e-7)


@pytest.mark.parametrize(
    ("got", "want", "expected_message"),
    [
        (torch.zeros(2, 5), torch.zeros(2, 4, 8), "shape (2, 5), expected (2, 4, 8) (one dimension more or fewer"),
        (torch.zeros(8, 2), torch.zeros(2, 8), "same sizes in another order: a transpose"),
        (torch.zeros(4, 4), torch.zeros(2, 8), "same number of elements: a reshape"),
        (torch.zeros(3, dtype=torch.float64), torch.zeros(3), "dtype torch.float64, expected torch.float32"),
        ([1, 2], torch.zeros(2), "expected a torch.Tensor of shape (2,), got list"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2), "1 NaN value(s) where the reference is a number"),
    ],
)
def test_mismatch_messages(got, want, expected_message):
    with pytest.raises(CheckError) as excinfo:
        assert_close(got, want, name="y")
    assert str(excinfo.value).startswith("y: ")
    assert expected_message in str(excinfo.value)


def test_value_mismatch_names_largest_error_and_where():
    want = torch.zeros(2, 3, 4)
    got = want.clone()
    got[1, 2, 3] = 0.5
    got[0, 0, 0] = 0.1
    message = compare(got, want, name="out").message
    assert "2 of 24 values differ" in message
    assert "largest error 0.5 at index (1, 2, 3): got 0.5, expected 0" in message


def test_tolerances_are_applied():
    assert compare(torch.tensor([1.0]), torch.tensor([1.001]), atol=1e-2)
    assert not compare(torch.tensor([1.0]), torch.tensor([1.001]), atol=1e-5, rtol=1e-5)


def test_containers_numbers_and_arrays():
    assert compare((torch.ones(2), 3.0), (torch.ones(2), 3.0))
    assert "output[1]: got 4" in compare((torch.ones(2), 4.0), (torch.ones(2), 3.0)).message
    assert "expected 2 items, got 1" in compare([torch.ones(1)], [torch.ones(1), torch.ones(1)]).message
    assert "keys differ" in compare({"a": 1}, {"b": 1}).message
    assert compare(np.ones(3, dtype=np.float32), torch.ones(3))


def test_check_function_prints_a_verdict(capsys):
    check_function(lambda x: x * 2, lambda x: x + x, [torch.randn(3), (torch.randn(2, 2),)], name="double")
    assert capsys.readouterr().out.startswith("✓ double matches ")


def test_check_function_reports_the_failing_input():
    with pytest.raises(CheckError, match=r"input 2 of 2: double\(tensor\(2, 2\)\): 4 of 4 values differ"):
        check_function(lambda x: x * 2 if x.dim() == 1 else x, lambda x: x + x,
                       [torch.ones(3), torch.ones(2, 2)], name="double")


def test_student_errors_become_one_clear_message():
    def unwritten(x):
        raise NotImplementedError("write me")

    def broken(x):
        return x @ torch.ones(5, 5)

    with pytest.raises(CheckError, match="unwritten is not written yet .it raised NotImplementedError: write me"):
        check_function(unwritten, lambda x: x, [torch.ones(3)])
    with pytest.raises(CheckError, match=r"broken raised RuntimeError: .* \(called with \(tensor\(2, 3\)\)\)"):
        check_function(broken, lambda x: x, [torch.ones(2, 3)])


def test_check_exercise(capsys):
    def stub(x):
        raise NotImplementedError

    assert check_exercise(stub, torch.exp, [torch.ones(2)]) is False
    assert "◻ stub: not written yet" in capsys.readouterr().out
    assert check_exercise(torch.exp, torch.exp, [torch.ones(2)], name="exp") is True
    with pytest.raises(CheckError):
        check_exercise(torch.sin, torch.exp, [torch.ones(2)], name="wrong")


def test_check_module_copies_weights_and_compares_gradients(capsys):
    torch.manual_seed(0)
    check_module(nn.Linear(4, 3), nn.Linear(4, 3), [torch.randn(2, 4)])
    assert "outputs and gradients on 1 input" in capsys.readouterr().out


def test_check_module_detects_wrong_gradients():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):  # same values, but no gradient flows to x
            return x.detach() * self.weight

    class Reference(Detached):
        def forward(self, x):
            return x * self.weight

    with pytest.raises(CheckError, match="gradient of argument 1"):
        check_module(Detached(), Reference(), [torch.randn(2, 3)])


def test_check_module_names_parameter_mismatch():
    with pytest.raises(CheckError, match=r"missing \['bias'\]"):
        check_module(nn.Linear(4, 3, bias=False), nn.Linear(4, 3), [torch.randn(1, 4)])
    with pytest.raises(CheckError, match="parameter 'weight': shape"):
        check_module(nn.Linear(4, 2), nn.Linear(4, 3), [torch.randn(1, 4)])


def test_rounded_gives_stable_printable_values():
    from helpers.checks import rounded

    assert rounded(torch.tensor([[1.23456, -0.0001]]), 2) == [1.23, 0.0]
    assert str(rounded(torch.tensor([-0.0004]))) == "[0.0]"  # never "-0.0": outputs repeat exactly
    assert rounded(2.5e-4, 4) == [0.0003] and rounded(np.array([1, 2])) == [1.0, 2.0]


def test_check_module_claims_gradients_only_when_it_compared_them(capsys):
    class Pair(nn.Module):  # a tuple output is compared, not back-propagated
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            return self.linear(x), x.sum()

    check_module(Pair(), Pair(), [torch.randn(2, 3)])
    assert "matches Pair: outputs on 1 input" in capsys.readouterr().out
