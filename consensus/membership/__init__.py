"""Gossip membership (SWIM with suspicion, contact-plan aware) and the view
of it other services read (:mod:`consensus.membership.view`)."""

from consensus.membership.view import MemberInfo as MemberInfo
from consensus.membership.view import MembershipView as MembershipView
from consensus.membership.view import MemberState as MemberState
from consensus.membership.view import Resources as Resources

__all__ = ["MemberInfo", "MemberState", "MembershipView", "Resources"]
