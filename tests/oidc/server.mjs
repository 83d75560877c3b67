// Local OpenID Provider for credbroker's end-to-end tests (TEST ONLY, never deploy).
//
// Real panva/oidc-provider with refresh-token rotation and reuse detection
// (shared/docs/testbed.md section 3). Binds 127.0.0.1 only.
//
// Env:
//   PORT    listen port on 127.0.0.1 (default 0 = ephemeral)
//   ID_TTL  id_token and access_token lifetime in seconds (default 300)
//   RT_TTL  refresh_token lifetime in seconds (default 86400)
//   DEVICE_TTL  device-code lifetime in seconds (default 600)
//   RT_GRACE    refresh-token reuse grace period in seconds (default 0: strict
//               reuse detection). Like Okta's leeway or Cognito's
//               RetryGracePeriodSeconds: a rotated-away refresh token is still
//               accepted (and rotated again) for RT_GRACE seconds after its
//               first use; after that, presenting it revokes the grant.
//
// stdout carries exactly one line, `READY http://127.0.0.1:<port>`, once the
// server listens; everything else (provider notices, grant errors) goes to stderr.
//
// Test-only routes:
//   POST /__test/mint   form client_id, sub, scope (default "openid offline_access")
//                       -> {"refresh_token", "grant_id"}; the token behaves exactly
//                       like one from a real authorization_code flow.
//   GET  /__test/stats  -> {"token_requests", "refresh_grants", "errors", ...}

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';
// oidc-provider's own in-memory adapter (no "exports" map: a deep import is
// supported), extended below for the grace period.
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

// oidc-provider prints notices with console.info; keep stdout for the READY line.
console.log = console.error;
console.info = console.error;

const PORT = Number.parseInt(process.env.PORT ?? '0', 10);
const ID_TTL = Number.parseInt(process.env.ID_TTL ?? '300', 10);
const RT_TTL = Number.parseInt(process.env.RT_TTL ?? '86400', 10);
const DEVICE_TTL = Number.parseInt(process.env.DEVICE_TTL ?? '600', 10);
const RT_GRACE = Number.parseInt(process.env.RT_GRACE ?? '0', 10);
const HOST = '127.0.0.1';
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_TYPES = ['authorization_code', 'refresh_token', DEVICE_CODE];

for (const [name, value] of [['PORT', PORT], ['ID_TTL', ID_TTL], ['RT_TTL', RT_TTL], ['DEVICE_TTL', DEVICE_TTL], ['RT_GRACE', RT_GRACE]]) {
  if (!Number.isInteger(value) || value < 0) {
    console.error(`invalid ${name}: ${process.env[name]}`);
    process.exit(2);
  }
}

const stats = {
  token_requests: 0,
  refresh_grants: 0,
  refresh_success: 0,
  errors: 0,
  minted: 0,
  grace_seconds: RT_GRACE,
  // Refresh grants that presented a rotated-away token inside the grace period.
  grace_reuses: 0,
};

// A refresh token's first use (epoch seconds), by id; kept apart from the
// payload, which oidc-provider validates.
const firstUse = new Map();

/**
 * The memory adapter with a reuse grace period for refresh tokens: the first
 * use (oidc-provider's `consume`, at rotation) starts the period instead of
 * marking the token consumed; the token reads as consumed once the period is
 * over (and a reuse then revokes the grant, as with strict detection).
 */
class GraceAdapter extends MemoryAdapter {
  async consume(id) {
    if (this.model !== 'RefreshToken') return super.consume(id);
    if (!firstUse.has(id)) firstUse.set(id, Math.floor(Date.now() / 1000));
    return undefined;
  }

  async find(id) {
    const payload = await super.find(id);
    if (this.model !== 'RefreshToken' || !payload || !firstUse.has(id)) return payload;
    const used = firstUse.get(id);
    if (Date.now() / 1000 - used >= RT_GRACE) return { ...payload, consumed: used };
    stats.grace_reuses += 1;
    return payload;
  }

  async destroy(id) {
    firstUse.delete(id);
    return super.destroy(id);
  }
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 64 * 1024) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'daemon',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: GRANT_TYPES,
        response_types: ['code'],
        // RFC 8252 §7.3: a native client's loopback redirect may use any port.
        redirect_uris: ['http://127.0.0.1:8765/cb', 'http://127.0.0.1/callback'],
      },
      {
        client_id: 'daemon-secret',
        client_secret: 'sekret',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: GRANT_TYPES,
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1:8765/cb'],
      },
    ],
    ...(RT_GRACE > 0 ? { adapter: GraceAdapter } : {}),
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    // Always rotate (the default rotates only public clients or old tokens).
    rotateRefreshToken: true,
    issueRefreshToken(_ctx, client, source) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return source.kind === 'RefreshToken' || source.scopes.has('offline_access');
    },
    ttl: {
      AccessToken: ID_TTL,
      IdToken: ID_TTL,
      RefreshToken: RT_TTL,
      Grant: Math.max(RT_TTL, 14 * 24 * 60 * 60),
      DeviceCode: DEVICE_TTL,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: 14 * 24 * 60 * 60,
    },
    async findAccount(_ctx, accountId) {
      return { accountId, async claims() { return { sub: accountId }; } };
    },
  });
  provider.proxy = false;

  provider.on('grant.success', (ctx) => {
    if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_success += 1;
  });
  provider.on('grant.error', (ctx, err) => {
    stats.errors += 1;
    console.error(
      `EVENT grant.error: ${err.error} / ${err.error_description}`
      + ` / detail=${err.error_detail ?? ''}`
      + ` / grant_type=${ctx.oidc?.params?.grant_type ?? '?'} client=${ctx.oidc?.client?.clientId ?? '?'}`,
    );
  });
  provider.on('server_error', (_ctx, err) => {
    stats.errors += 1;
    console.error('EVENT server_error:', err);
  });

  // Counts every POST to the token endpoint, whatever its outcome.
  provider.use(async (ctx, next) => {
    const isToken = ctx.method === 'POST' && ctx.path === '/token';
    if (isToken) stats.token_requests += 1;
    await next();
    if (isToken && ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_grants += 1;
  });

  return provider;
}

async function mint(provider, form) {
  const clientId = form.get('client_id') || 'daemon';
  const accountId = form.get('sub') || 'alice';
  const scope = form.get('scope') || 'openid offline_access';
  const client = await provider.Client.find(clientId);
  if (!client) return [400, { error: 'invalid_client', error_description: `unknown client ${clientId}` }];

  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const refreshToken = await new provider.RefreshToken({
    accountId,
    client,
    grantId,
    scope,
    gty: 'authorization_code',
    authTime: Math.floor(Date.now() / 1000),
  }).save();
  stats.minted += 1;
  return [200, { refresh_token: refreshToken, grant_id: grantId }];
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
  });
  res.end(data);
}

async function main() {
  let provider;
  let handler;
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    try {
      if (path === '/__test/mint' && req.method === 'POST') {
        const [status, body] = await mint(provider, await readForm(req));
        sendJson(res, status, body);
        return;
      }
      if (path === '/__test/stats' && req.method === 'GET') {
        sendJson(res, 200, stats);
        return;
      }
    } catch (err) {
      console.error('test route failed:', err);
      sendJson(res, 500, { error: 'server_error', error_description: String(err) });
      return;
    }
    handler(req, res);
  });

  server.listen(PORT, HOST, () => {
    const { port } = server.address();
    const issuer = `http://${HOST}:${port}`;
    provider = buildProvider(issuer);
    handler = provider.callback();
    process.stdout.write(`READY ${issuer}\n`);
  });

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
