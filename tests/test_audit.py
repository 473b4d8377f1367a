"""--noplusone-audit: every relationship that still relies on implicit lazy loading, once."""

from __future__ import annotations

import textwrap

import pytest
from conftest import MODELS, Project

MORE_MODELS = '''
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, backref, mapped_column, relationship


class Other(DeclarativeBase):
    pass


class Shelf(Other):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list["Book"]] = relationship(lazy="selectin", back_populates="shelf")


class Book(Other):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))
    shelf: Mapped[Shelf] = relationship(lazy="raise_on_sql", back_populates="books")
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    owner = relationship("Owner", backref=backref("books"))  # the backref is listed here too


class Owner(Other):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True)
'''

AUDIT_TEST = """
import more


def test_nothing():
    pass
"""


def line(source: str, text: str) -> int:
    lines = textwrap.dedent(source).strip().splitlines()
    return next(number for number, content in enumerate(lines, 1) if text in content)


def test_audit_lists_implicit_lazy_relationships_with_kind_and_line(project: Project) -> None:
    project.pytester.makepyfile(more=MORE_MODELS)
    project.write_test(AUDIT_TEST)
    result = project.run("--noplusone-audit")
    result.assert_outcomes(passed=1)

    def models(text: str) -> str:
        return f"models.py:{line(MODELS, text)}"

    owner = f"more.py:{line(MORE_MODELS, 'owner = relationship')}"
    tag_posts = models('back_populates="tags"')
    result.stdout.fnmatch_lines(
        [
            "*= noplusone audit =*",
            "noplusone audit: 10 relationships still rely on implicit lazy loading "
            '(lazy="select"):',
            f"  User.posts     (one-to-many collection)   {models('posts: Mapped[list[Post]]')}",
            f"  User.profile   (one-to-one scalar)        {models('profile: Mapped[Profile')}",
            f"  Profile.user   (many-to-one)              {models('user: Mapped[User]')}",
            f"  Post.author    (many-to-one)              {models('author: Mapped[User]')}",
            f"  Post.comments  (one-to-many collection)   {models('comments: Mapped')}",
            f"  Post.tags      (many-to-many collection)  {models('tags: Mapped')}",
            f"  Comment.post   (many-to-one)              {models('post: Mapped[Post]')}",
            f"  Tag.posts      (many-to-many collection)  {tag_posts}",
            f"  Book.owner     (many-to-one)              {owner}",
            f"  Owner.books    (one-to-many collection)   {owner}",
            'fix: give each a loading strategy in the mapping (lazy="selectin", "joined" or '
            '"raise_on_sql"), or eager-load it in every query whose code touches it.',
        ]
    )
    assert result.stdout.str().count("noplusone audit:") == 1
    result.stdout.no_fnmatch_line("*Shelf.books*")
    result.stdout.no_fnmatch_line("*Book.shelf*")


def _audit_lines(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, text in enumerate(lines) if text.startswith("noplusone audit:"))
    end = next(i for i, text in enumerate(lines) if text.startswith("fix: give each"))
    return lines[start : end + 1]


def test_the_audit_under_xdist_merges_what_the_workers_see(project: Project) -> None:
    """The models that only a test module imports exist on the workers, not on the controller:
    the audit under -n 2 is the audit of -n 0, never a false all-clear."""
    project.pytester.makepyfile(more=MORE_MODELS)
    project.write_test(AUDIT_TEST)
    serial = project.run("--noplusone-audit")
    parallel = project.run("--noplusone-audit", "-n", "2")
    parallel.assert_outcomes(passed=1)
    assert _audit_lines(parallel) == _audit_lines(serial)
    assert any("Book.owner" in text for text in _audit_lines(parallel))
