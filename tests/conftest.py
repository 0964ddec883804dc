"""Shared pytest configuration. Each block below belongs to one part of the suite."""

# --- reference suite (issue 3): Hypothesis profiles and the no-JIT subset marker -------------
from tests import hypothesis_profiles  # noqa: F401,E402 - registers and loads the profile


def pytest_configure(config):  # noqa: D103 - pytest hook
    config.addinivalue_line(
        "markers",
        "reference_subset: reference tests cheap enough to run with NUMBA_DISABLE_JIT=1 (make test-nojit)",
    )
# --- end of reference suite block ----------------------------------------------------------------


# --- CUDA numerics: the float32 tolerances of the suite assume float32 arithmetic -------------
import torch  # noqa: E402

# cuDNN convolutions default to TF32 (10-bit mantissas, ~1e-3 relative error) on Ampere and newer
# GPUs; on an H200 that alone failed 10 float32 comparisons against the reference and the plain
# path. The suite checks float32 semantics, so it turns TF32 off; restoring keeps torch's default.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
# gradcheck runs each backward twice and demands identical results; cuDNN's default backward
# algorithms may sum in a different order each time.
torch.backends.cudnn.deterministic = True
# --- end of CUDA numerics block ------------------------------------------------------------------


# --- small tensors on a shared CPU -----------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-tensor tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    fastest on tiny tensors, the same sums in every run, immune to oversubscribed CPUs; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tutorials (issue 17): each notebook executed once per session, for its test and for the site ------
from tests.notebook_runs import NotebookRuns  # noqa: E402


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory):
    """The tutorials' executions, shared by ``test_notebooks.py`` (each must run) and the site build in
    ``test_docs.py`` (each page must show its outputs), so a full run executes every notebook once."""
    for module in ("jupytext", "nbclient", "mkdocs"):  # the dev extra: docs/hooks.py executes the notebooks
        pytest.importorskip(module)
    return NotebookRuns(tmp_path_factory.mktemp("notebooks"))
# --- end of tutorials block ----------------------------------------------------------------------------
