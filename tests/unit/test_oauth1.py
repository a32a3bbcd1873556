"""OAuth 1.0 HMAC-SHA1 signing against the published examples of RFC 5849."""

from __future__ import annotations

from urllib.parse import unquote

from services.invoker.oauth1 import (
    Credentials,
    authorization_header,
    base_string_uri,
    hmac_sha1,
    normalized_parameters,
    percent_encode,
    signature_base_string,
)

# RFC 5849 section 3.4.1.1: the request and its signature base string.
SECTION_3_URL = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b"
SECTION_3_OAUTH = [
    ("oauth_consumer_key", "9djdj82h48djs9d2"), ("oauth_token", "kkk9d7dh3k39sjv7"),
    ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131201"),
    ("oauth_nonce", "7d8f3e4a"),
]
SECTION_3_BODY = [("c2", ""), ("a3", "2 q")]  # the form body "c2&a3=2+q"
SECTION_3_BASE = (
    "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D"
    "%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a"
    "%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3D"
    "kkk9d7dh3k39sjv7"
)

# RFC 5849 section 1.2: the photo request, with all secrets published.
PHOTOS = Credentials(consumer_key="dpf43f3p2l4k3l03", consumer_secret="kd94hf93k423kf44",
                     token="nnch734d00sl2jdk", token_secret="pfkkdhi9sl3r4s00")
PHOTOS_URL = "http://photos.example.net/photos?file=vacation.jpg&size=original"
PHOTOS_SIGNATURE = "MdpQcU8iPSUjWoN/UDMsK2sui9I="


def test_base_string_of_section_3_4_1_1() -> None:
    assert signature_base_string("post", SECTION_3_URL,
                                 [*SECTION_3_OAUTH, *SECTION_3_BODY]) == SECTION_3_BASE


def test_realm_and_signature_stay_out_of_the_base_string() -> None:
    extra = [("realm", "Example"), ("oauth_signature", "x")]
    assert signature_base_string("POST", SECTION_3_URL,
                                 [*SECTION_3_OAUTH, *SECTION_3_BODY, *extra]) == SECTION_3_BASE


def test_normalized_parameters_of_section_3_4_1_3_2() -> None:
    params = [("b5", "=%3D"), ("a3", "a"), ("c@", ""), ("a2", "r b"), *SECTION_3_OAUTH,
              ("c2", ""), ("a3", "2 q")]
    assert normalized_parameters(params) == (
        "a2=r%20b&a3=2%20q&a3=a&b5=%3D%253D&c%40=&c2=&oauth_consumer_key=9djdj82h48djs9d2"
        "&oauth_nonce=7d8f3e4a&oauth_signature_method=HMAC-SHA1&oauth_timestamp=137131201"
        "&oauth_token=kkk9d7dh3k39sjv7")


def test_base_string_uri_examples_of_section_3_4_1_2() -> None:
    assert base_string_uri("HTTP://EXAMPLE.COM:80/r%20v/X?id=123") == "http://example.com/r%20v/X"
    assert base_string_uri("https://www.example.net:8080/?q=1") == "https://www.example.net:8080/"
    assert base_string_uri("https://example.net:443") == "https://example.net/"


def test_percent_encoding_of_section_3_6() -> None:
    assert percent_encode("Ladies + Gentlemen") == "Ladies%20%2B%20Gentlemen"
    assert percent_encode("An encoded string!") == "An%20encoded%20string%21"
    assert percent_encode("Dogs, Cats & Mice") == "Dogs%2C%20Cats%20%26%20Mice"
    assert percent_encode("☃") == "%E2%98%83"
    assert percent_encode("-._~") == "-._~"


def test_hmac_sha1_of_the_photo_example_in_section_1_2() -> None:
    oauth = [("oauth_consumer_key", PHOTOS.consumer_key), ("oauth_token", PHOTOS.token),
             ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131202"),
             ("oauth_nonce", "chapoH")]
    base = signature_base_string("GET", PHOTOS_URL, oauth)
    assert hmac_sha1(base, PHOTOS.consumer_secret, PHOTOS.token_secret) == PHOTOS_SIGNATURE


def _fields(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    pairs = (item.split("=", 1) for item in header.removeprefix("OAuth ").split(", "))
    return {k: unquote(v.strip('"')) for k, v in pairs}


def test_authorization_header_of_the_photo_example() -> None:
    header = authorization_header(PHOTOS, "GET", PHOTOS_URL, nonce="chapoH", timestamp=137131202,
                                  realm="Photos", with_version=False)
    fields = _fields(header)
    assert fields["realm"] == "Photos"
    assert fields["oauth_signature"] == PHOTOS_SIGNATURE
    assert fields["oauth_consumer_key"] == "dpf43f3p2l4k3l03"
    assert fields["oauth_token"] == "nnch734d00sl2jdk"
    assert "oauth_version" not in fields


def test_header_signs_form_bodies_and_a_fresh_nonce_each_time() -> None:
    creds = Credentials("key", "secret", "token", "token-secret")
    a = _fields(authorization_header(creds, "POST", "https://h.example/p", form_body="x=1"))
    b = _fields(authorization_header(creds, "POST", "https://h.example/p", form_body="x=2"))
    assert a["oauth_version"] == "1.0"
    assert a["oauth_nonce"] != b["oauth_nonce"]
    fixed = {"nonce": "n", "timestamp": 1}
    one = _fields(authorization_header(creds, "POST", "https://h.example/p", form_body="x=1", **fixed))
    two = _fields(authorization_header(creds, "POST", "https://h.example/p", form_body="x=2", **fixed))
    assert one["oauth_signature"] != two["oauth_signature"]  # the body is signed


def test_no_token_sends_no_oauth_token() -> None:
    fields = _fields(authorization_header(Credentials("key", "secret"), "GET", "https://h.example/"))
    assert "oauth_token" not in fields
