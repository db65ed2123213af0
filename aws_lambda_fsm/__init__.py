"""aws-lambda-fsm's import names, so that its machines and actions run on lambda-fsm
without edits.

An aws-lambda-fsm action subclasses ``aws_lambda_fsm.action.Action`` and reads its
``context`` and ``obj`` the way aws-lambda-fsm hands them over; its ``fsm.yaml`` names
``aws_lambda_fsm.action.Action`` as a do-nothing placeholder. :mod:`.action` and
:mod:`.fsm` map that API onto lambda-fsm's. The rest of aws-lambda-fsm (its AWS helpers,
client, settings module, constants, ECS runner) has lambda-fsm counterparts with other
APIs: importing it fails at once, with a message naming the counterpart, rather than
later with an ``AttributeError`` deep inside an action.
"""

from __future__ import annotations

from ._unsupported import NotSupported

__all__ = ["NotSupported"]
