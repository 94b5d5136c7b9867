# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - luod's REST API socket on the managed host.
      - On the host it needs no token (root, or a member of group C(luod)).
    type: path
    default: /run/luod/api.sock
  url:
    description:
      - luod's REST API over TCP instead of the socket, for example C(https://host:8470).
      - Every request then carries the bearer token read from O(token_file).
    type: str
  token_file:
    description:
      - File holding the bearer token for O(url) (luod's C(api.token_file)).
    type: path
  api_timeout:
    description:
      - Seconds to wait for one answer of luod.
    type: float
    default: 30.0
"""
