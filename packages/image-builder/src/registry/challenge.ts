/** One authentication challenge from a `WWW-Authenticate` header. */
export interface AuthChallenge {
  /** Lower-case scheme: `basic`, `bearer`, ... */
  scheme: string;
  /** Parameters with lower-case names (`realm`, `service`, `scope`, `error`). */
  parameters: Record<string, string>;
}

const tokenCharacter = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `WWW-Authenticate` header value (RFC 7235): one or more challenges separated by
 * commas, each a scheme followed by `name=value` parameters, values bare tokens or quoted strings
 * with backslash escapes. Commas inside quoted values (`scope="repository:a:pull,push"`) stay in
 * the value. Malformed parts end parsing; the challenges read so far are returned.
 */
export function parseChallenges(header: string): AuthChallenge[] {
  const challenges: AuthChallenge[] = [];
  let position = 0;
  const length = header.length;

  const skipWhitespace = () => {
    while (position < length && (header[position] === " " || header[position] === "\t")) {
      position++;
    }
  };
  const readToken = (): string => {
    const start = position;
    while (position < length && tokenCharacter.test(header[position]!)) position++;
    return header.slice(start, position);
  };
  const readQuoted = (): string | undefined => {
    // position is at the opening quote
    position++;
    let value = "";
    while (position < length) {
      const character = header[position]!;
      if (character === "\\" && position + 1 < length) {
        value += header[position + 1];
        position += 2;
      } else if (character === '"') {
        position++;
        return value;
      } else {
        value += character;
        position++;
      }
    }
    return undefined;
  };

  let current: AuthChallenge | undefined;
  while (position < length) {
    skipWhitespace();
    if (header[position] === ",") {
      position++;
      continue;
    }
    const start = position;
    const token = readToken();
    if (token === "") break;
    skipWhitespace();
    if (header[position] === "=" && current !== undefined) {
      // A parameter of the current challenge (or a token68 ending in '=' padding, see below).
      position++;
      skipWhitespace();
      let value: string | undefined;
      if (header[position] === '"') {
        value = readQuoted();
        if (value === undefined) break;
      } else {
        // Bare values should be tokens; some servers send URLs unquoted, so read up to a comma.
        const valueStart = position;
        while (position < length && !/[,\s"]/.test(header[position]!)) position++;
        value = header.slice(valueStart, position);
        if (/^=*$/.test(value) && (value !== "" || position >= length)) {
          // token68 (e.g. base64 with padding) rather than a parameter: ignore it.
          continue;
        }
      }
      current.parameters[token.toLowerCase()] = value;
      continue;
    }
    if (header[position] === "=" && current === undefined) break;
    // A new challenge starts with a scheme token.
    position = start + token.length;
    current = { scheme: token.toLowerCase(), parameters: {} };
    challenges.push(current);
  }
  return challenges;
}
