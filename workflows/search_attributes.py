"""Custom search attributes that show runs in the Temporal Web UI and list filters."""

from temporalio.common import SearchAttributeKey

RUN_STATUS = SearchAttributeKey.for_keyword("MetaBuilderRunStatus")
TENANT = SearchAttributeKey.for_keyword("MetaBuilderTenant")
PLAN = SearchAttributeKey.for_keyword("MetaBuilderPlan")

ALL = (RUN_STATUS, TENANT, PLAN)
