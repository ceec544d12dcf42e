"""Usage, cost and budgets (issue #15): what each caller and each of its end users generated and spent.

- ``records``: one usage record per billed generation, and what it is made of.
- ``table``: the keys of the usage table (one DynamoDB table: records, counters, budgets, cache entries).
- ``prices``: the price data (``catalog/prices.json``) and the cost of a record.
- ``ledger``: records written exactly once, with the counters the Usage API reads, in one transaction.
- ``report``: ``GET /v1/organization/usage/images`` in OpenAI's shape, from the counters.
- ``budgets``: the ``BUDGETS`` setting and the atomic reservation checked before a provider is called.
"""
