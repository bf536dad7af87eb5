from pymachined.ops.sharing import Sharing


def test_a_key_goes_with_its_last_user() -> None:
    sharing: Sharing[str] = Sharing()
    assert sharing.use("a", "ns1") is None
    assert sharing.use("b", "ns1") is None
    assert sharing.use("a", "ns1") is None  # again: still one use
    assert sharing.release("a") is None  # b still uses ns1
    assert sharing.release("b") == "ns1"
    assert sharing.release("b") is None  # unknown machine


def test_moving_frees_the_old_key_only_when_unused() -> None:
    sharing: Sharing[int] = Sharing()
    sharing.use("a", 1)
    sharing.use("b", 1)
    assert sharing.use("a", 2) is None  # b keeps 1
    assert sharing.use("b", 2) == 1
    assert sharing.release("a") is None
    assert sharing.release("b") == 2


def test_clear_forgets_everything() -> None:
    sharing: Sharing[int] = Sharing()
    sharing.use("a", 1)
    sharing.clear()
    assert sharing.release("a") is None
    sharing.use("a", 1)
    assert sharing.release("a") == 1
