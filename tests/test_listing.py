"""soteria_lib.listing: the code a chapter shows is the code that runs."""
import inspect

import pytest

from soteria_lib.defenses.soteria import keep_mask
from soteria_lib.leakage import recover_representation
from soteria_lib.listing import Listing, show_source


def test_a_listing_is_the_installed_source_with_where_it_comes_from():
    listing = show_source(keep_mask)
    assert listing.code == inspect.getsource(keep_mask).rstrip("\n")
    assert listing.qualname == "soteria_lib.defenses.soteria.keep_mask"
    assert listing.path == "soteria_lib/defenses/soteria.py"
    assert inspect.getsourcelines(keep_mask)[1] == listing.line
    markdown = listing._repr_markdown_()
    assert markdown.startswith("`soteria_lib.defenses.soteria.keep_mask` (soteria_lib/defenses/soteria.py, line ")
    assert f"```python\n{listing.code}\n```" in markdown


def test_without_its_docstring_a_listing_keeps_every_other_line():
    full, short = show_source(recover_representation), show_source(recover_representation, docstring=False)
    docstring = inspect.getdoc(recover_representation)
    assert docstring in full.code and docstring not in short.code
    body = [line for line in full.code.splitlines() if docstring not in line]
    assert short.code.splitlines() == body
    compile(short.code, "<listing>", "exec")  # still valid Python


def test_a_function_that_is_only_a_docstring_keeps_it():
    def documented():
        """Only this."""
    assert '"""Only this."""' in show_source(documented, docstring=False).code


@pytest.mark.parametrize("thing", [3, len, Listing("a", "b", 1, "c")])
def test_only_functions_and_classes_can_be_shown(thing):
    with pytest.raises(TypeError, match="function or class"):
        show_source(thing)
