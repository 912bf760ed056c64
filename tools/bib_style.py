"""Sphinx extension (listed in _config.yml): the pybtex style ``author_year_labels``.

The text cites in author-year form ("Sun et al., 2021", ``bibtex_reference_style``); with this
style the reference list labels its entries the same way instead of with alpha codes such as
"SLW+21", so a reader who follows a citation finds the label they clicked. Entries are sorted
by author, year and title.
"""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(part.render_as("text") for part in person.rich_prelast_names + person.rich_last_names)


class AuthorYearLabels(BaseLabelStyle):
    """"Zhu, 2019", "Zhu and Han, 2019" or "Zhu et al., 2019"; "a", "b", ... on ties."""

    def format_labels(self, sorted_entries):
        labels = [self._label(entry) for entry in sorted_entries]
        for i, label in enumerate(labels):
            same = [j for j, other in enumerate(labels) if other == label]
            yield label if len(same) == 1 else label + "abcdefghijklmnopqrstuvwxyz"[same.index(i)]

    @staticmethod
    def _label(entry) -> str:
        names = [_surname(p) for p in entry.persons.get("author", [])]
        if not names:
            who = entry.key
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_sorting_style = "author_year_title"
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year_labels", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
