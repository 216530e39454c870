// node-oidc-provider as tokend's reference peer (bench/run.py --peer). One Node process:
//
//   node server.mjs keygen JWKS_FILE        an RS256 signing key (private JWKS) into a file
//   node server.mjs serve                   the provider on 127.0.0.1:$PEER_PORT
//   node server.mjs mint COUNT              COUNT refresh tokens, one per line, on stdout
//
// Environment: PEER_PORT, REDIS_URL (the bench's own redis-server), PEER_JWKS (the keygen
// file), PEER_CLIENT_SECRET. Configured as the issue asks: its Redis adapter
// (redis_adapter.js), RS256 JWT access tokens for one resource server (resource indicators:
// oidc-provider 9 issues JWT access tokens only for a resource server whose
// getResourceServerInfo says accessTokenFormat 'jwt'), refresh-token rotation on every use
// (rotateRefreshToken: true; a consumed token presented again revokes the grant), and one
// confidential client authenticating with client_secret_basic. The token endpoint is
// mounted at tokend's path (/auth/v2/token) so that bench/refresh.lua drives both unchanged.
//
// `mint` issues each family the way the authorization code grant does at its end, through
// the provider's own models in a second process on the same Redis: a Grant (offline_access
// and the resource's `api` scope) saved, then a RefreshToken for it saved (the fields of
// lib/helpers/grant_common.js, gty 'authorization_code'). The server then finds them in
// Redis as it would any token it issued itself.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

import Provider from 'oidc-provider';

import { RedisAdapter, connect } from './redis_adapter.js';

const RESOURCE = 'urn:tokend-bench:api';
const CLIENT_ID = 'bench-peer';
const SCOPE = 'offline_access api';

function configuration() {
  return {
    adapter: RedisAdapter,
    jwks: JSON.parse(readFileSync(process.env.PEER_JWKS, 'utf8')),
    clients: [{
      client_id: CLIENT_ID,
      client_secret: process.env.PEER_CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:9/cb'],
    }],
    scopes: ['openid', 'offline_access', 'api'],
    routes: { token: '/auth/v2/token' },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Grant: 30 * 24 * 3600,
      Session: 14 * 24 * 3600,
      Interaction: 3600,
      IdToken: 3600,
    },
    cookies: { keys: [randomUUID()] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== RESOURCE) throw new Provider.errors.InvalidTarget();
          return {
            scope: 'api',
            audience: RESOURCE,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  };
}

function provider(port) {
  connect(process.env.REDIS_URL);
  const p = new Provider(`http://127.0.0.1:${port}`, configuration());
  p.on('server_error', (_ctx, err) => console.error('server_error', err));
  return p;
}

async function mint(count) {
  const p = provider(process.env.PEER_PORT);
  const client = await p.Client.find(CLIENT_ID);
  const out = [];
  for (let i = 0; i < count; i += 1) {
    const accountId = `bench-${randomUUID()}`;
    const grant = new p.Grant({ accountId, clientId: CLIENT_ID });
    grant.addOIDCScope('offline_access');
    grant.addResourceScope(RESOURCE, 'api');
    const grantId = await grant.save();
    const rt = new p.RefreshToken({
      accountId,
      authTime: Math.floor(Date.now() / 1000),
      client,
      expiresWithSession: false,
      grantId,
      gty: 'authorization_code',
      resource: RESOURCE,
      rotations: 0,
      scope: SCOPE,
    });
    out.push(await rt.save());
  }
  process.stdout.write(out.map((t) => `${t}\n`).join(''));
  process.exit(0);
}

const [mode, arg] = process.argv.slice(2);
if (mode === 'keygen') {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
  writeFileSync(arg, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
} else if (mode === 'serve') {
  const port = Number(process.env.PEER_PORT);
  provider(port).listen(port, '127.0.0.1');
} else if (mode === 'mint') {
  await mint(Number(arg));
} else {
  console.error('usage: server.mjs keygen FILE | serve | mint COUNT');
  process.exit(2);
}
