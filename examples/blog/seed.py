"""Sample data for the blog."""

from __future__ import annotations

from .models import Comment, Post, Profile, Tag, User


def blog_objects(authors: int = 3, posts_per_author: int = 2) -> list[User]:
    """``authors`` users with a profile and posts; every post has a comment and tags."""
    python, sql = Tag(name="python"), Tag(name="sql")
    users = []
    for a in range(authors):
        posts = [
            Post(
                title=f"Post {a}.{p}",
                comments=[Comment(body=f"Nice post {a}.{p}")],
                tags=[python, sql] if p % 2 == 0 else [python],
            )
            for p in range(posts_per_author)
        ]
        users.append(User(name=f"author{a}", profile=Profile(bio=f"Writer {a}"), posts=posts))
    return users
