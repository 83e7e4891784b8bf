// A real OpenID Provider for tidegate's tests: `node provider.mjs PORT CLIENT_ID CLIENT_SECRET
// REDIRECT_URI`. oidc-provider's development sign-in accepts any login (and password); the
// login becomes the subject and the `email` claim. Prints "ready" once listening.
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'email', 'profile'],
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: sub, email_verified: true, name: sub.split('@')[0] }),
  }),
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['tidegate-test-only-not-a-secret'] },
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log('ready');
});
