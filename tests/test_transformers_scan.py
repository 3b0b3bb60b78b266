"""transformers reads each of its model folders once per server process, not twice."""

from __future__ import annotations

import json
import subprocess
import sys

# Records every folder listed while the model classes our engine uses are imported.
FOLDERS_LISTED = """
import json, os
listed = []
scandir = os.scandir
def recording_scandir(path="."):
    listed.append(os.fspath(path))
    return scandir(path)
os.scandir = recording_scandir
import phi3_lsp
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
import sys
models = os.path.dirname(sys.modules["transformers.models"].__file__)
imported = [os.path.dirname(module.__file__) for name, module in list(sys.modules.items())
            if name.startswith("transformers.models") and hasattr(module, "__path__")]
print(json.dumps({"listed": [path for path in listed if path.startswith(models)],
                  "imported": imported}))
"""


def _listed_again(script: str) -> tuple[list[str], set[str]]:
    """Folders listed more than once, and those of the model packages imported."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout.splitlines()[-1])
    listed: list[str] = found["listed"]
    assert len(listed) > 100  # transformers did build its import tables from the folders
    return sorted({path for path in listed if listed.count(path) > 1}), set(found["imported"])


def test_each_model_folder_is_read_once_on_the_way_to_a_model_class() -> None:
    listed_again, imported = _listed_again(FOLDERS_LISTED)
    # A package that is imported builds its own table from its own folder (a listing of a
    # few files); the ~570 folders of the models not used are never read again.
    assert set(listed_again) <= imported


def test_nothing_changes_when_transformers_was_imported_first() -> None:
    script = FOLDERS_LISTED.replace("import phi3_lsp\n", "import transformers, phi3_lsp\n")
    script += (
        "import sys\n"
        "from phi3_lsp.transformers_scan import _UnboundedScanCache\n"
        "assert not any(isinstance(f, _UnboundedScanCache) for f in sys.meta_path)\n"
    )
    listed_again, imported = _listed_again(script)
    # transformers' own behaviour, which the first test would see without our finder: its
    # second import table reads the folders of models never imported again.
    assert len(set(listed_again) - imported) > 100
