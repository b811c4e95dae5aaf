"""Gossip membership (SWIM with suspicion, contact-plan aware) and the view
of it other services read (:mod:`dcis.consensus.membership.view`)."""

from dcis.consensus.membership.view import MemberInfo as MemberInfo
from dcis.consensus.membership.view import MembershipView as MembershipView
from dcis.consensus.membership.view import MemberState as MemberState
from dcis.consensus.membership.view import Resources as Resources

__all__ = ["MemberInfo", "MemberState", "MembershipView", "Resources"]
