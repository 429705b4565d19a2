"""Push rules (Client-Server API, "Push Notifications"): the server-default rules, user rules and their
evaluation.

* :mod:`mxtwisted.push.rules` -- rules as data: the predefined rules for a user, the merge with the user's own
  rules into the ruleset clients see, validation of actions and conditions. Pure, no I/O.
* :mod:`mxtwisted.push.evaluator` -- which rule of a ruleset applies to an event, and its actions. Pure.
* :mod:`mxtwisted.push.handler` -- the use cases behind ``/pushrules``: one user's changes serialised, every
  change published as the ``m.push_rules`` account data so ``/sync`` delivers it.
"""
