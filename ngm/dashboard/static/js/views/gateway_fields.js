// The gateway's fields as the forms show them; names are the API's.
export const ENVIRONMENTS = ['development', 'staging', 'production'];
export const STATUSES = ['active', 'inactive', 'provisioning', 'error'];
export const HEALTH = ['healthy', 'degraded', 'unhealthy', 'unknown'];

const identity = 'Identity', endpoints = 'Endpoints', capacity = 'Capacity', checks = 'Health checks';

export const CREATE_FIELDS = [
  { name: 'name', label: 'Name', group: identity },
  { name: 'environment', label: 'Environment', type: 'select', options: ENVIRONMENTS, group: identity },
  { name: 'gateway_type', label: 'Type', type: 'select', options: ['shared', 'dedicated', 'private'], group: identity },
  { name: 'region', label: 'Region', placeholder: 'eu-west-1', group: identity },
  { name: 'description', label: 'Description', type: 'textarea', group: identity },
  { name: 'api_url', label: 'API URL', placeholder: 'https://gw.example.com', group: endpoints },
  { name: 'api_key', label: 'Gateway API key', type: 'password', group: endpoints,
    help: 'Write-only: stored encrypted, never shown again.' },
  { name: 'health_check_url', label: 'Health check URL', help: 'Defaults to the API URL + /health.', group: endpoints },
];

export const EDIT_FIELDS = [
  ...CREATE_FIELDS.filter(f => f.name !== 'api_key'),
  { name: 'api_port', label: 'API port', type: 'number', group: endpoints },
  { name: 'mcp_url', label: 'MCP URL', group: endpoints },
  { name: 'mcp_port', label: 'MCP port', type: 'number', group: endpoints },
  { name: 'ssl_enabled', label: 'TLS enabled', type: 'checkbox', group: endpoints },
  { name: 'ssl_cert_id', label: 'TLS certificate id', group: endpoints },
  { name: 'auth_methods', label: 'Auth methods', type: 'list', help: 'Comma-separated: api_key, jwt, oauth2, mtls.', group: endpoints },
  { name: 'jwt_issuer', label: 'JWT issuer', group: endpoints },
  { name: 'request_timeout', label: 'Request timeout (s)', type: 'number', help: 'For routed agent requests.', group: endpoints },
  { name: 'min_instances', label: 'Min instances', type: 'number', group: capacity },
  { name: 'max_instances', label: 'Max instances', type: 'number', group: capacity },
  { name: 'current_instances', label: 'Current instances', type: 'number', group: capacity },
  { name: 'health_check_interval', label: 'Interval (s)', type: 'number', group: checks },
  { name: 'health_check_timeout', label: 'Timeout (s)', type: 'number', group: checks },
  { name: 'healthy_threshold', label: 'Healthy after (successes)', type: 'number', group: checks },
  { name: 'unhealthy_threshold', label: 'Unhealthy after (failures)', type: 'number', group: checks },
  { name: 'degraded_latency_ms', label: 'Degraded above (ms)', type: 'number', group: checks },
  { name: 'health_grace_period', label: 'Grace period (s)', type: 'number', group: checks },
];

export const RATE_LIMIT_FIELDS = [
  { name: 'global_rate_limit', label: 'Gateway (all callers)', type: 'number', help: '0 = unlimited' },
  { name: 'per_agent_rate_limit', label: 'Per agent', type: 'number', help: '0 = unlimited' },
  { name: 'per_user_rate_limit', label: 'Per user (API key)', type: 'number', help: '0 = unlimited' },
  { name: 'rate_limit_window', label: 'Window (s)', type: 'number' },
  { name: 'rate_limit_algorithm', label: 'Algorithm', type: 'select', options: ['sliding_window', 'token_bucket'] },
  { name: 'rate_limit_burst', label: 'Burst (token bucket)', type: 'number' },
];
