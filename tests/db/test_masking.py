"""A database URL's secret is masked where it stands, never as letters elsewhere in a message, and never leaks."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from db.engine import connect_error, database_url, has_secret, mask_url
from db.errors import StoreError


def test_a_short_password_masks_the_url_not_the_words_of_the_message():
    url = make_url("postgresql+psycopg://focus:st@host/focus")
    message = str(connect_error(url, OSError('could not translate host name "host" to address')))
    assert 'host name "host"' in message and "ho***" not in message
    assert "focus:***@host" in message and ":st@" not in message


@pytest.mark.parametrize(
    "driver_text",
    ["connection to focus:s3cr%t@db failed", "dsn: user=focus password=s3cr%t host=db", "password='s3cr%t' refused",
     "url postgresql://focus:s3cr%25t@db/focus"],
)
def test_a_password_echoed_by_the_driver_is_masked(driver_text):
    url = make_url("postgresql+psycopg://focus:s3cr%25t@db/focus")  # the password s3cr%t, percent-encoded
    message = str(connect_error(url, OSError(driver_text)))
    assert "s3cr" not in message and "***" in message


@pytest.mark.parametrize("url", ["postgresql+psycopg://focus:Xq7@Zr9@db/focus",
                                 "postgresql://focus:Ab1@Cd2@Ef3@db:5432/f"])
def test_an_unencoded_at_sign_in_a_password_leaks_no_part_of_it(url):
    password = url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    assert has_secret(url)
    shown = mask_url(url)
    assert shown == "<a malformed URL>"
    with pytest.raises(StoreError, match="percent-encoded") as info:
        database_url(url)
    for part in password.split("@"):
        assert part not in str(info.value) and part not in shown


def test_a_well_formed_url_still_masks_as_before():
    assert mask_url("postgresql+psycopg://me:p%40ss@db:5432/focus") == "postgresql+psycopg://me:***@db:5432/focus"
    assert database_url("postgresql://me:p%40ss@db/focus").password == "p@ss"

