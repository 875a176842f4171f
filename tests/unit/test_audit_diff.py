from ngm.nodes.audit.changes import diff


def test_create_lists_every_field_and_hides_the_key():
    after = {"id": "1", "name": "gw", "api_key_encrypted": "gAAAA-token", "api_key_last4": "1234",
             "created_at": "t"}
    assert diff(None, after) == {"api_key": "[set]", "name": {"to": "gw"}}


def test_update_lists_from_and_to_of_changed_fields_only():
    before = {"name": "a", "region": "eu", "api_key_encrypted": "t1", "api_key_last4": "1111"}
    after = {"name": "b", "region": "eu", "api_key_encrypted": "t2", "api_key_last4": "2222"}
    assert diff(before, after) == {"api_key": "[changed]", "name": {"from": "a", "to": "b"}}


def test_clearing_the_key():
    assert diff({"api_key_encrypted": "t"}, {"api_key_encrypted": None}) == {"api_key": "[cleared]"}


def test_no_token_or_last4_ever_appears():
    out = diff({"api_key_encrypted": "SECRET-TOKEN", "api_key_last4": "9999"},
               {"api_key_encrypted": "OTHER-TOKEN", "api_key_last4": "8888"})
    assert "SECRET" not in str(out) and "9999" not in str(out) and "8888" not in str(out)
