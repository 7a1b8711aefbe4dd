"""Who may do what: API keys (scope and labels), the principal of a request, the audit trail."""
