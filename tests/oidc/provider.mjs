// The OpenID provider of the oidc test suite: panva's oidc-provider (pinned in package.json),
// configured as a strict, standards-conformant provider, on a loopback port.
//
// Run: node provider.mjs NODE_MODULES_DIR [CONFIG_JSON]
// It listens on 127.0.0.1 port 0 and prints one JSON line, {"issuer": ..., "port": ...}, once
// it is ready; it exits when its standard input closes (so a test that dies leaves no server).
//
// CONFIG_JSON (all optional): accessTokenTtl, clientCredentialsTtl, deviceCodeTtl,
// refreshTokenTtl (seconds); deviceInterval (seconds, sent as `interval` in the device
// authorization answer; null sends none, as oidc-provider does); enforceInterval (answer
// `slow_down` to a device poll sooner than `interval` after the previous one, or than this
// many seconds when it is a number, as RFC 8628
// §3.5 allows and several public providers do; oidc-provider itself never sends slow_down);
// deviceFlow (false: no device flow at all, so its grant is an unsupported_grant_type);
// rfcErrorCodes (false: a grant the client may not use is invalid_request, as oidc-provider
// says, instead of RFC 6749's unauthorized_client).
// extraClients: client metadata added to CLIENTS (a private_key_jwt client whose `jwks` holds
// the public key a test generated).
// tokenExchange: {issuer, audience, jwks} of a workload identity issuer (a Kubernetes cluster, a
// CI system) whose JWTs the client `exchange-client` may exchange (RFC 8693, below).
//
// Beside the provider's own endpoints:
//   GET  /interaction/:uid          JSON: {uid, prompt, params} of a pending login/consent
//   POST /interaction/:uid/approve  log in as {"account": NAME} (form or JSON), or consent to
//                                   everything asked; 303 back to the provider
//   POST /interaction/:uid/abort    the user refuses (access_denied); 303 back
//   GET  /device (confirm page)     the provider's page; the form carries the xsrf token
//   GET  /resource[?scope=X]        a protected resource: 200 {sub, client_id, scope} for a
//                                   live access token, else 401 with WWW-Authenticate
//                                   (error="invalid_token"); 403 insufficient_scope when
//                                   the token lacks scope X
//   GET  /__test/stats              counters: token requests and errors per grant type,
//                                   refresh-token reuse detections, grants revoked
//   POST /__test/revoke-grants      revoke every grant of {"account": NAME}

import http from 'node:http';
import path from 'node:path';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

const [modules, rawConfig] = process.argv.slice(2);
if (!modules) {
  process.stderr.write('usage: node provider.mjs NODE_MODULES_DIR [CONFIG_JSON]\n');
  process.exit(2);
}
const config = {
  accessTokenTtl: 60,
  clientCredentialsTtl: 60,
  deviceCodeTtl: 120,
  refreshTokenTtl: 24 * 3600,
  deviceInterval: 1,
  enforceInterval: true,
  deviceFlow: true,
  rfcErrorCodes: true,
  extraClients: [],
  tokenExchange: null,
  ...JSON.parse(rawConfig || '{}'),
};

// The package sits in the cache folder nox installed it into, not beside this script.
const { default: Provider, errors } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);
// jose is oidc-provider's own JOSE library (a dependency of it): verifies subject tokens.
const jose = await import(
  pathToFileURL(path.join(modules, 'jose', 'dist', 'webapi', 'index.js')).href
);

// Client ids and secrets that need RFC 6749 §2.3.1 form-encoding before Base64.
export const CLIENTS = [
  {
    client_id: 'basic client:1%',
    client_secret: 'basic secret: a+b/c%d&e=f',
    token_endpoint_auth_method: 'client_secret_basic',
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  {
    client_id: 'post-client',
    client_secret: 'post secret: a+b/c%d&e=f',
    token_endpoint_auth_method: 'client_secret_post',
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  {
    // A public native app (RFC 8252): no secret, PKCE required, any loopback port.
    client_id: 'native-client',
    token_endpoint_auth_method: 'none',
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  {
    // Machine to machine: no user, no refresh token; allowed `api:read` only.
    client_id: 'service-client',
    client_secret: 'service secret: a+b/c%d&e=f',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api:read',
  },
  {
    // A client that may not refresh (unauthorized_client) nor ask for more than `openid`.
    client_id: 'no-refresh-client',
    scope: 'openid',
    client_secret: 'no-refresh secret',
    token_endpoint_auth_method: 'client_secret_basic',
    application_type: 'native',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
    response_types: [],
    redirect_uris: [],
  },
];

const stats = {
  tokenRequests: {},
  tokenErrors: {},
  reuseDetections: 0,
  deviceCodeReuse: 0,
  grantsRevoked: 0,
  deviceAuthorizations: 0,
};
const lastPoll = new Map(); // device_code -> ms of its last poll

function count(table, key) {
  table[key] = (table[key] || 0) + 1;
}

function sendJson(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': data.length,
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(data);
}

async function readText(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function readBody(req) {
  const text = await readText(req);
  if ((req.headers['content-type'] || '').startsWith('application/json')) {
    return text ? JSON.parse(text) : {};
  }
  return Object.fromEntries(new URLSearchParams(text));
}

const server = http.createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
// Workload identity (with tokenExchange only: the grant type exists only then): exchanges a
// subject token (RFC 8693) for `api:read` access tokens.
const EXCHANGE_CLIENT = {
  client_id: 'exchange-client',
  client_secret: 'exchange secret: a+b/c%d&e=f',
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['urn:ietf:params:oauth:grant-type:token-exchange'],
  response_types: [],
  redirect_uris: [],
  scope: 'api:read',
};
const allClients = [
  ...CLIENTS, ...(config.tokenExchange ? [EXCHANGE_CLIENT] : []), ...config.extraClients,
];
const clients = config.deviceFlow ? allClients : allClients.map((client) => ({
  ...client, grant_types: client.grant_types.filter((gty) => gty !== DEVICE_GRANT),
}));

const provider = new Provider(issuer, {
  clients,
  scopes: ['openid', 'offline_access', 'email', 'api:read', 'api:write'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  cookies: { keys: ['aioscopedauth test cookie key'] },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() { return { sub, email: `${sub}@example.test`, email_verified: true }; },
    };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // Rotate on every use: a refresh token presented twice is detected as reused, and the
  // provider then revokes the whole grant (the strictest behaviour, and oidc-provider's own).
  rotateRefreshToken: true,
  ttl: {
    AccessToken: config.accessTokenTtl,
    ClientCredentials: config.clientCredentialsTtl,
    DeviceCode: config.deviceCodeTtl,
    RefreshToken: config.refreshTokenTtl,
    Grant: 14 * 24 * 3600,
    Interaction: 600,
    Session: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: {
      enabled: config.deviceFlow,
      async userCodeInputSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`;
      },
      async userCodeConfirmSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`;
      },
      async successSource(ctx) {
        ctx.body = '<!DOCTYPE html><html><body>device-login-success</body></html>';
      },
    },
  },
});

// RFC 8693 token exchange: oidc-provider has no handler of its own, so one is registered through
// its extension point (registerGrantType). The request is checked as §2.1 says; the subject
// token must be a JWT of the configured workload issuer and audience, verified by jose; the
// answer (§2.2.1) is a real access token of the provider, so /resource accepts it. Each
// exchange's parameters are kept in stats.exchanges (the subject token itself is not).
const EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
stats.exchanges = [];
if (config.tokenExchange) {
  const exchange = config.tokenExchange;
  const keys = jose.createLocalJWKSet(exchange.jwks);
  const list = (value) => (value === undefined ? [] : [].concat(value));
  provider.registerGrantType(EXCHANGE_GRANT, async (ctx) => {
    const { params, client } = ctx.oidc;
    const seen = {
      audience: list(params.audience),
      resource: list(params.resource),
      scope: params.scope ?? null,
      subject_token_type: params.subject_token_type ?? null,
      requested_token_type: params.requested_token_type ?? null,
      actor_token: params.actor_token !== undefined,
    };
    stats.exchanges.push(seen);
    if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter \'subject_token\'');
    if (!params.subject_token_type) throw new errors.InvalidRequest('missing required parameter \'subject_token_type\'');
    if (params.subject_token_type !== JWT_TYPE) {
      throw new errors.InvalidRequest('unsupported subject_token_type');
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('unsupported requested_token_type');
    }
    if (seen.audience.some((aud) => aud !== exchange.targetAudience)) {
      throw new errors.InvalidTarget('unknown audience');
    }
    let payload;
    try {
      ({ payload } = await jose.jwtVerify(params.subject_token, keys, {
        issuer: exchange.issuer, audience: exchange.audience,
      }));
    } catch (err) {
      throw new errors.InvalidGrant(`subject token invalid (${err.code})`);
    }
    seen.sub = payload.sub;
    const allowed = new Set((client.scope || '').split(' '));
    const scopes = (params.scope || '').split(' ').filter(Boolean);
    if (scopes.some((scope) => !allowed.has(scope))) {
      throw new errors.InvalidScope('requested scope is not allowed', params.scope);
    }
    const grant = new provider.Grant({ accountId: payload.sub, clientId: client.clientId });
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    const grantId = await grant.save();
    const token = new provider.AccessToken({
      accountId: payload.sub, client, grantId, scope: scopes.join(' ') || undefined, gty: 'token_exchange',
    });
    ctx.body = {
      access_token: await token.save(),
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      ...(token.scope ? { scope: token.scope } : {}),
    };
  }, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
    'requested_token_type', 'audience', 'resource', 'scope'], ['audience', 'resource']);
}

provider.on('grant.success', (ctx) => count(stats.tokenRequests, ctx.oidc.params.grant_type));
provider.on('grant.error', (ctx, err) => {
  const gty = ctx.oidc?.params?.grant_type || 'unknown';
  count(stats.tokenRequests, gty);
  count(stats.tokenErrors, `${gty} ${err.error}`);
  if (err.error_detail === 'refresh token already used') stats.reuseDetections += 1;
  if (err.error_detail === 'device code already consumed') stats.deviceCodeReuse += 1;
});
provider.on('grant.revoked', () => { stats.grantsRevoked += 1; });
provider.on('device_authorization.success', () => { stats.deviceAuthorizations += 1; });

// The device authorization answer carries `interval` when configured.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && config.deviceInterval !== null) {
    ctx.body = { ...ctx.body, interval: config.deviceInterval };
  }
});

// oidc-provider answers a grant the client may not use with invalid_request; RFC 6749 §5.2
// names that unauthorized_client, which is what most providers send. Sent as the RFC says
// unless rfcErrorCodes is false.
provider.use(async (ctx, next) => {
  await next();
  if (config.rfcErrorCodes && ['/token', '/device/auth'].includes(ctx.path) && ctx.status === 400
      && ctx.body?.error === 'invalid_request'
      && /is not allowed for this client$/.test(ctx.body.error_description || '')) {
    ctx.body = { ...ctx.body, error: 'unauthorized_client' };
  }
});

// A poll sooner than `interval` after the previous one is answered slow_down (RFC 8628 §3.5).
provider.use(async (ctx, next) => {
  const enforced = typeof config.enforceInterval === 'number'
    ? config.enforceInterval : config.deviceInterval;
  if (config.enforceInterval && enforced !== null
      && ctx.path === '/token' && ctx.method === 'POST' && ctx.is('application/x-www-form-urlencoded')) {
    const text = await readText(ctx.req);
    // The provider reads the body itself later: hand it the text again.
    ctx.req.body = text;
    const body = Object.fromEntries(new URLSearchParams(text));
    const code = body.device_code;
    if (body.grant_type === DEVICE_GRANT && code) {
      const now = Date.now();
      const previous = lastPoll.get(code);
      lastPoll.set(code, now);
      if (previous !== undefined && now - previous < enforced * 1000) {
        count(stats.tokenRequests, body.grant_type);
        count(stats.tokenErrors, `${body.grant_type} slow_down`);
        ctx.status = 400;
        ctx.set('cache-control', 'no-store');
        ctx.body = {
          error: 'slow_down',
          error_description: 'you are polling too quickly and should back off at a reasonable rate',
        };
        return;
      }
    }
  }
  await next();
});

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    sendJson(res, 400, { error: 'interaction mismatch' });
    return;
  }
  const { prompt, params, session } = details;
  if (action === undefined) {
    sendJson(res, 200, { uid, prompt: prompt.name, params, account: session?.accountId ?? null });
    return;
  }
  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'the user refused the request',
    }, { mergeWithLastSubmission: false });
    return;
  }
  let result;
  if (prompt.name === 'login') {
    const body = await readBody(req);
    result = { login: { accountId: body.account || 'alice' } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    sendJson(res, 400, { error: `unexpected prompt ${prompt.name}` });
    return;
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function resource(req, res) {
  const match = /^Bearer (\S+)$/.exec(req.headers.authorization || '');
  const challenge = (error) => ({
    'www-authenticate': `Bearer realm="${issuer}"${error ? `, error="${error}"` : ''}`,
  });
  if (!match) {
    sendJson(res, 401, { error: 'invalid_request' }, challenge());
    return;
  }
  const token = (await provider.AccessToken.find(match[1]))
    || (await provider.ClientCredentials.find(match[1]));
  if (!token || token.isExpired) {
    sendJson(res, 401, { error: 'invalid_token' }, challenge('invalid_token'));
    return;
  }
  if (token.grantId && !(await provider.Grant.find(token.grantId))) {
    sendJson(res, 401, { error: 'invalid_token' }, challenge('invalid_token'));
    return;
  }
  // ?scope=X: the resource needs scope X (RFC 6750 §3.1: 403 insufficient_scope without it).
  const needed = new URL(req.url, issuer).searchParams.get('scope');
  if (needed && !(token.scope || '').split(' ').includes(needed)) {
    sendJson(res, 403, { error: 'insufficient_scope' }, {
      'www-authenticate': `Bearer realm="${issuer}", error="insufficient_scope", scope="${needed}"`,
    });
    return;
  }
  sendJson(res, 200, {
    sub: token.accountId ?? null, client_id: token.clientId, scope: token.scope ?? null,
  });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  const handle = async () => {
    const step = /^\/interaction\/([^/]+)(?:\/(approve|abort))?$/.exec(url.pathname);
    if (step) {
      await interaction(req, res, step[1], step[2]);
    } else if (url.pathname === '/resource') {
      await resource(req, res);
    } else if (url.pathname === '/__test/stats') {
      sendJson(res, 200, stats);
    } else if (url.pathname === '/__test/revoke-grants' && req.method === 'POST') {
      const { grantIds } = await readBody(req);
      for (const id of grantIds || []) await provider.Grant.adapter.destroy(id);
      sendJson(res, 200, { revoked: (grantIds || []).length });
    } else {
      callback(req, res);
    }
  };
  handle().catch((err) => {
    process.stderr.write(`test route failed: ${err.stack || err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.destroy();
  });
});

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => { server.close(); process.exit(0); });
