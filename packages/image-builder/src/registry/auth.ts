import { type AuthChallenge, parseChallenges } from "./challenge.js";
import type { CredentialsProvider, RegistryCredentials } from "./credentials.js";
import { RegistryError } from "./errors.js";
import { type HttpTransport, header, readBody } from "./http.js";
import { isRetryableStatus, parseRetryAfter } from "./retry.js";

/** An error the retry loop may retry (a transient status from a registry or token server). */
export class TransientError extends Error {
  readonly status: number;
  readonly retryAfter: number | undefined;

  constructor(message: string, status: number, retryAfter: number | undefined) {
    super(message);
    this.name = "TransientError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

export interface AuthenticatorOptions {
  registry: string;
  credentials: CredentialsProvider;
  transport: HttpTransport;
  userAgent: string;
  now?: () => number;
}

/** `repository:<name>:<actions>` */
export function repositoryScope(repository: string, actions: string): string {
  return `repository:${repository}:${actions}`;
}

/**
 * Authorization for one registry: learns the scheme from the first challenge, then sends Basic
 * credentials or Bearer tokens (cached per scope until they expire) with every request.
 */
export class Authenticator {
  readonly #options: AuthenticatorOptions;
  #scheme: "basic" | "bearer" | undefined;
  #realm: URL | undefined;
  #service: string | undefined;
  #credentials: Promise<RegistryCredentials | undefined> | undefined;
  readonly #tokens = new Map<string, CachedToken>();
  /** Token requests under way, by scope key: concurrent requests share one. */
  readonly #pending = new Map<string, Promise<string>>();

  constructor(options: AuthenticatorOptions) {
    this.#options = options;
  }

  /** Credentials for this registry (looked up once). */
  credentials(): Promise<RegistryCredentials | undefined> {
    this.#credentials ??= this.#options.credentials(this.#options.registry);
    return this.#credentials;
  }

  /** Where the credentials came from, for error messages. */
  async describeCredentials(): Promise<string> {
    const credentials = await this.credentials();
    return credentials === undefined ? "no credentials" : `credentials from ${credentials.source}`;
  }

  /** The Authorization header for a request needing `scopes`, if the scheme is known. */
  async authorization(scopes: string[], repository?: string): Promise<string | undefined> {
    if (this.#scheme === "basic") {
      const credentials = await this.credentials();
      return credentials?.kind === "basic" ? basicHeader(credentials) : undefined;
    }
    if (this.#scheme === "bearer") {
      const cached = this.#cachedToken(scopes);
      if (cached !== undefined) return `Bearer ${cached}`;
      return `Bearer ${await this.#sharedFetch(scopes, repository)}`;
    }
    return undefined;
  }

  /**
   * Handles a 401 response's challenge. Returns true when a retry with new authorization makes
   * sense; throws when the registry wants something this client cannot provide.
   */
  async challenge(
    wwwAuthenticate: string | undefined,
    scopes: string[],
    repository: string | undefined,
    sentAuthorization: string | undefined,
  ): Promise<boolean> {
    const challenges = parseChallenges(wwwAuthenticate ?? "");
    const bearer = challenges.find((challenge) => challenge.scheme === "bearer");
    const basic = challenges.find((challenge) => challenge.scheme === "basic");
    if (bearer !== undefined) {
      this.#useBearer(bearer);
      // A cached token that was refused (expired early, revoked) is replaced by a fresh one,
      // asked for our scopes plus whatever the challenge names.
      const wanted = mergeScopes(scopes, bearer.parameters.scope);
      const cached = this.#cachedToken(wanted);
      // Another request fetched a token meanwhile: use it rather than asking again.
      if (cached !== undefined && sentAuthorization !== `Bearer ${cached}`) return true;
      this.#forget(scopes);
      await this.#sharedFetch(wanted, repository, scopes);
      return true;
    }
    if (basic !== undefined) {
      const credentials = await this.credentials();
      if (credentials?.kind !== "basic") {
        throw new RegistryError(
          "Unauthenticated",
          `registry "${this.#options.registry}" requires Basic authentication${forRepository(repository)} and ${credentials === undefined ? "no credentials were found for it" : `${credentials.source} has only an identity token`}`,
          {
            registry: this.#options.registry,
            ...(repository === undefined ? {} : { repository }),
            status: 401,
          },
        );
      }
      this.#scheme = "basic";
      // Retry only when the refused request did not already carry these credentials.
      return sentAuthorization !== basicHeader(credentials);
    }
    throw new RegistryError(
      "Unauthenticated",
      `registry "${this.#options.registry}" answered 401${forRepository(repository)} with no usable challenge (WWW-Authenticate: ${JSON.stringify(wwwAuthenticate ?? "")})`,
      {
        registry: this.#options.registry,
        ...(repository === undefined ? {} : { repository }),
        status: 401,
      },
    );
  }

  #useBearer(challenge: AuthChallenge) {
    const realm = challenge.parameters.realm;
    if (realm === undefined || realm === "") {
      throw new RegistryError(
        "Unauthenticated",
        `registry "${this.#options.registry}" sent a Bearer challenge without a realm`,
        { registry: this.#options.registry, status: 401 },
      );
    }
    let url: URL;
    try {
      url = new URL(realm);
    } catch (error) {
      throw new RegistryError(
        "Unauthenticated",
        `registry "${this.#options.registry}" sent a Bearer realm that is not a URL: "${realm}"`,
        { registry: this.#options.registry, status: 401, cause: error },
      );
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new RegistryError(
        "Unauthenticated",
        `registry "${this.#options.registry}" sent a Bearer realm with an unsupported scheme: "${realm}"`,
        { registry: this.#options.registry, status: 401 },
      );
    }
    this.#scheme = "bearer";
    this.#realm = url;
    this.#service = challenge.parameters.service;
  }

  #cachedToken(scopes: string[]): string | undefined {
    const now = (this.#options.now ?? Date.now)();
    const key = scopeKey(scopes);
    for (const [cachedKey, cached] of this.#tokens) {
      if (cached.expiresAt <= now) continue;
      if (cachedKey === key || coversScopes(cachedKey, scopes)) return cached.token;
    }
    return undefined;
  }

  #forget(scopes: string[]) {
    for (const cachedKey of [...this.#tokens.keys()]) {
      if (cachedKey === scopeKey(scopes) || coversScopes(cachedKey, scopes))
        this.#tokens.delete(cachedKey);
    }
  }

  #sharedFetch(scopes: string[], repository: string | undefined, cacheAlsoFor?: string[]) {
    const key = scopeKey(scopes);
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#fetchToken(scopes, repository, cacheAlsoFor).finally(() => {
        this.#pending.delete(key);
      });
      this.#pending.set(key, pending);
    }
    return pending;
  }

  async #fetchToken(
    scopes: string[],
    repository: string | undefined,
    cacheAlsoFor?: string[],
  ): Promise<string> {
    const realm = this.#realm!;
    const credentials = await this.credentials();
    const url = new URL(realm);
    const headers: Record<string, string> = {
      "User-Agent": this.#options.userAgent,
      Accept: "application/json",
    };
    let method = "GET";
    let body: Uint8Array | undefined;
    if (credentials?.kind === "identity-token") {
      // OAuth2 refresh-token grant, as docker's token spec describes for identity tokens.
      method = "POST";
      const form = new URLSearchParams();
      form.set("grant_type", "refresh_token");
      form.set("refresh_token", credentials.identityToken);
      form.set("client_id", "nix2container");
      if (this.#service !== undefined) form.set("service", this.#service);
      if (scopes.length > 0) form.set("scope", scopes.join(" "));
      body = Buffer.from(form.toString());
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    } else {
      if (this.#service !== undefined) url.searchParams.set("service", this.#service);
      for (const scope of scopes) url.searchParams.append("scope", scope);
      if (credentials?.kind === "basic") {
        url.searchParams.set("account", credentials.username);
        headers.Authorization = basicHeader(credentials);
      }
    }
    const response = await this.#options.transport({
      method,
      url,
      headers,
      ...(body === undefined ? {} : { body }),
    });
    const text = (await readBody(response, 1024 * 1024)).toString("utf8");
    const registry = this.#options.registry;
    if (response.status === 401 || response.status === 403) {
      throw new RegistryError(
        response.status === 401 ? "Unauthenticated" : "PermissionDenied",
        `token server ${realm.origin}${realm.pathname} refused ${await this.describeCredentials()} for registry "${registry}"${forRepository(repository)} (scope ${scopes.join(" ") || "none"}): HTTP ${response.status}${summarize(text)}`,
        { registry, status: response.status, ...(repository === undefined ? {} : { repository }) },
      );
    }
    if (isRetryableStatus(response.status)) {
      throw new TransientError(
        `token server ${realm.origin}${realm.pathname} answered HTTP ${response.status}`,
        response.status,
        parseRetryAfter(header(response.headers, "retry-after")),
      );
    }
    if (response.status !== 200) {
      throw new RegistryError(
        "Unauthenticated",
        `token server ${realm.origin}${realm.pathname} answered HTTP ${response.status} for registry "${registry}"${summarize(text)}`,
        { registry, status: response.status },
      );
    }
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch (error) {
      throw new RegistryError(
        "Unauthenticated",
        `token server ${realm.origin}${realm.pathname} answered with something that is not JSON`,
        { registry, cause: error },
      );
    }
    const token =
      typeof parsed.token === "string" && parsed.token !== ""
        ? parsed.token
        : typeof parsed.access_token === "string" && parsed.access_token !== ""
          ? parsed.access_token
          : undefined;
    if (token === undefined) {
      throw new RegistryError(
        "Unauthenticated",
        `token server ${realm.origin}${realm.pathname} answered without "token" or "access_token"`,
        { registry },
      );
    }
    // The token spec's default lifetime is 60 s; keep a margin for clock skew and slow requests.
    const lifetime =
      typeof parsed.expires_in === "number" && parsed.expires_in > 0 ? parsed.expires_in : 60;
    const expiresAt = (this.#options.now ?? Date.now)() + Math.max(1, lifetime - 10) * 1000;
    this.#tokens.set(scopeKey(scopes), { token, expiresAt });
    if (cacheAlsoFor !== undefined) this.#tokens.set(scopeKey(cacheAlsoFor), { token, expiresAt });
    return token;
  }
}

function basicHeader(credentials: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

function scopeKey(scopes: string[]): string {
  return [...scopes].sort().join(" ");
}

/** True when the scopes of a cached key grant every action of every wanted scope. */
function coversScopes(cachedKey: string, wanted: string[]): boolean {
  const granted = new Map<string, Set<string>>();
  for (const scope of cachedKey.split(" ")) {
    const colon = scope.lastIndexOf(":");
    if (colon < 0) continue;
    granted.set(scope.slice(0, colon), new Set(scope.slice(colon + 1).split(",")));
  }
  return wanted.every((scope) => {
    const colon = scope.lastIndexOf(":");
    const actions = granted.get(scope.slice(0, colon));
    return (
      actions !== undefined &&
      scope
        .slice(colon + 1)
        .split(",")
        .every((action) => actions.has(action))
    );
  });
}

/**
 * Adds the challenge's scope(s) to ours (a registry may ask for more, e.g. a mount source). Scopes
 * naming the same resource are one scope with the union of their actions, whatever their order:
 * docker-registry's challenge says `push,pull` or `pull,push` from one request to the next.
 */
export function mergeScopes(scopes: string[], challengeScope: string | undefined): string[] {
  const actionsByResource = new Map<string, string[]>();
  for (const scope of [...scopes, ...(challengeScope ?? "").split(" ")]) {
    if (scope === "") continue;
    const colon = scope.lastIndexOf(":");
    const resource = colon < 0 ? scope : scope.slice(0, colon);
    const actions = colon < 0 ? [] : scope.slice(colon + 1).split(",");
    const known = actionsByResource.get(resource);
    if (known === undefined) actionsByResource.set(resource, [...new Set(actions)]);
    else for (const action of actions) if (!known.includes(action)) known.push(action);
  }
  return [...actionsByResource].map(([resource, actions]) =>
    actions.length === 0 ? resource : `${resource}:${actions.join(",")}`,
  );
}

function forRepository(repository: string | undefined): string {
  return repository === undefined ? "" : ` for repository "${repository}"`;
}

function summarize(body: string): string {
  const trimmed = body.trim().replace(/\s+/g, " ");
  if (trimmed === "") return "";
  return `: ${trimmed.length > 200 ? `${trimmed.slice(0, 200)}...` : trimmed}`;
}
