// Evaluates requests against roles' identity policies with @cloud-copilot/iam-simulate (run by devtools/iam_eval.py).
//
// stdin:  {"roles": {"<role>": [{"name": "<policy>", "policy": {...}}]},
//          "requests": [{"id": "...", "role": "<role>", "principal": "<arn>", "action": "svc:Action",
//                        "resource": "<arn>", "accountId": "<12 digits>", "context": {...},
//                        "resourcePolicy": {...} (optional: the bucket's or queue's own policy)}]}
// stdout: {"grants": [{"role", "policy", "statement", "effect", "actions", "notActions", "resources", "notResources"}],
//          "results": [{"id", "decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | null, "error",
//                       "matched": [{"policy", "statement", "actions": [...], "resources": [...]}]}]}
// "matched" lists the Allow statements that allowed the request and which of their action and resource patterns
// matched it: what tells a grant some test exercised from one no test did.
import { loadPolicy } from '@cloud-copilot/iam-policy'
import { runSimulation } from '@cloud-copilot/iam-simulate'

const statementId = (statement) => statement.sid() || statement.index().toString()
const asList = (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value])

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))

  const grants = []
  for (const [role, policies] of Object.entries(input.roles)) {
    for (const { name, policy } of policies) {
      for (const statement of loadPolicy(policy).statements()) {
        const raw = statement.toJSON ? statement.toJSON() : {}
        grants.push({
          role,
          policy: name,
          statement: statementId(statement),
          effect: statement.effect(),
          actions: asList(raw.Action),
          notActions: asList(raw.NotAction),
          resources: asList(raw.Resource),
          notResources: asList(raw.NotResource)
        })
      }
    }
  }

  const results = []
  for (const request of input.requests) {
    const simulation = {
      identityPolicies: input.roles[request.role] ?? [],
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      ...(request.resourcePolicy ? { resourcePolicy: request.resourcePolicy } : {}),
      request: {
        action: request.action,
        principal: request.principal,
        resource: { accountId: request.accountId, resource: request.resource },
        contextVariables: request.context ?? {}
      }
    }
    const response = await runSimulation(simulation, {})
    if (response.resultType === 'error') {
      results.push({ id: request.id, decision: null, error: response.errors, matched: [] })
      continue
    }
    const result = response.resultType === 'single' ? response.result : response.results[0]
    const allows = result?.analysis?.identityAnalysis?.allowStatements ?? []
    const matched = allows.map((analysis) => ({
      policy: analysis.policyId,
      statement: analysis.explain.identifier,
      actions: asList(analysis.explain.actions).filter((a) => a.matches).map((a) => a.action),
      resources: asList(analysis.explain.resources).filter((r) => r.matches).map((r) => r.resource)
    }))
    results.push({ id: request.id, decision: response.overallResult, error: null, matched })
  }
  process.stdout.write(JSON.stringify({ grants, results }))
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`)
  process.exit(1)
})
