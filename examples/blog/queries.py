"""The blog's read paths, each written the way that runs a fixed number of queries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from .models import Comment, Post, Tag, User


async def front_page(session: AsyncSession) -> list[dict[str, object]]:
    """Every post with its author, tags and comment count: 3 queries, whatever the data size."""
    posts = await session.scalars(
        select(Post)
        .options(joinedload(Post.author), selectinload(Post.tags))
        .order_by(Post.id)
    )
    rows = await session.execute(select(Comment.post_id, func.count()).group_by(Comment.post_id))
    counts: dict[int, int] = dict(rows.all())  # type: ignore[arg-type]
    return [
        {
            "title": post.title,
            "author": post.author.name,
            "tags": sorted(tag.name for tag in post.tags),
            "comments": counts.get(post.id, 0),
        }
        for post in posts
    ]


async def author_page(session: AsyncSession, user_id: int) -> dict[str, object]:
    """One author with profile, posts and their comments: 4 queries."""
    user = await session.scalar(
        select(User)
        .where(User.id == user_id)
        .options(
            joinedload(User.profile),
            selectinload(User.posts).selectinload(Post.comments),
        )
    )
    if user is None:
        raise LookupError(user_id)
    return {
        "name": user.name,
        "bio": user.profile.bio if user.profile else "",
        "posts": {post.title: [c.body for c in post.comments] for post in user.posts},
    }


async def tag_cloud(session: AsyncSession) -> dict[str, int]:
    """How many posts carry each tag: 2 queries (tags, then their posts in one IN query)."""
    tags = await session.scalars(select(Tag).options(selectinload(Tag.posts)).order_by(Tag.name))
    return {tag.name: len(tag.posts) for tag in tags}


async def titles_by_author_slow(session: AsyncSession) -> dict[str, list[str]]:
    """The N+1 version of a page: one query for the users, then one per user."""
    result: dict[str, list[str]] = {}
    for user in (await session.scalars(select(User).order_by(User.id))).all():
        posts = await session.scalars(select(Post.title).where(Post.author_id == user.id))
        result[user.name] = list(posts)
    return result


async def titles_by_author(session: AsyncSession) -> dict[str, list[str]]:
    """The fixed version: users with their posts in two queries."""
    users = await session.scalars(
        select(User).options(selectinload(User.posts)).order_by(User.id)
    )
    return {user.name: [post.title for post in user.posts] for user in users}
