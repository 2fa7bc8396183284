"""The API names of the package ``hetc`` stay the API functions whatever hetc submodules are imported."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_hetc_validate_stays_the_function_after_the_subpackage_is_imported() -> None:
    # A fresh interpreter: this process has long imported hetc.validate.
    code = ("import sys, hetc, hetc.api\n"
            "from hetc.validate import make_inputs\n"
            "import hetc.validate.weights\n"
            "assert hetc.validate is hetc.api.validate, hetc.validate\n"
            "from hetc import validate\n"
            "assert validate is hetc.api.validate\n"
            "assert sys.modules['hetc.validate'].make_inputs is make_inputs\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
