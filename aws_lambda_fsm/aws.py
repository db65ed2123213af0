"""aws-lambda-fsm's ``aws``: not provided, see :data:`aws_lambda_fsm._unsupported.MODULES`."""

from __future__ import annotations

from ._unsupported import refuse_module

raise refuse_module(__name__)
