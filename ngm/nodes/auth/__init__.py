from ngm.nodes.auth.keys import ROLES, Principal, generate_api_key, hash_api_key, role_at_least

__all__ = ["ROLES", "Principal", "generate_api_key", "hash_api_key", "role_at_least"]
