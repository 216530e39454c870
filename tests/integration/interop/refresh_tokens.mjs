// The spec's JavaScript client (spec/refresh-token.md, "Code Example"), run by
// tests/integration/test_interop.py against a real tokend on loopback with Node 20's own
// fetch, URLSearchParams and btoa. The function is the spec's, line for line, except that
// its three constants come from the environment instead of being written in.
//
// usage: TOKEN_ENDPOINT=... CLIENT_ID=... CLIENT_SECRET=... node refresh_tokens.mjs REFRESH_TOKEN
// prints the token response as JSON on stdout; on error prints
// "refreshTokens threw: <message>" on stderr and exits 1.

const refreshTokens = async (refreshToken) => {
  const tokenEndpoint = process.env.TOKEN_ENDPOINT;
  const clientId = process.env.CLIENT_ID;
  const clientSecret = process.env.CLIENT_SECRET;

  const params = new URLSearchParams();
  params.append('grant_type', 'refresh_token');
  params.append('refresh_token', refreshToken);

  try {
    const response = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        'Authorization': 'Basic ' + btoa(clientId + ':' + clientSecret)
      },
      body: params
    });

    if (!response.ok) {
      const errorData = await response.json();
      throw new Error(errorData.error_description || 'Failed to refresh tokens');
    }

    const data = await response.json();
    return data;
  } catch (error) {
    console.error('Error refreshing tokens:', error);
    throw error;
  }
};

refreshTokens(process.argv[2]).then(
  (data) => {
    process.stdout.write(JSON.stringify(data));
  },
  (error) => {
    process.stderr.write(`refreshTokens threw: ${error.message}\n`);
    process.exitCode = 1;
  }
);
