// Typings for fnbus's "lp-faas-toolbelt" (libs/runtimes/node/lp-faas-toolbelt/index.js).
// Call shapes follow LivePerson Functions' toolbelt; docs/toolbelt.md has the
// details, the limits and what this platform does not provide.

/// <reference types="node" />

// ------------------------------------------------------------------ errors

/** A toolbelt call failed; `code` is the host's error code (e.g. `secret_not_found`). */
export class ToolbeltError extends Error {
  constructor(code: string, message: string);
  name: string;
  code: string;
}

/** The client or method is not provided by this platform (`code: "not_available"`). */
export class NotAvailableError extends ToolbeltError {
  constructor(what: string, why?: string);
}

/** request-promise's RequestError: the request did not get a response. */
export class RequestError extends Error {
  name: 'RequestError';
  /** The underlying ToolbeltError; its `code` is the host's (`not_allowlisted`, `timeout`, `connect_error`, …). */
  cause: ToolbeltError;
  error: ToolbeltError;
  options: RequestOptions;
  response?: FullResponse;
  /** Copied from `cause.code`. */
  code?: string;
}

/** request-promise's StatusCodeError: a non-2xx status with `simple: true`, or the rate limit (429). */
export class StatusCodeError extends Error {
  name: 'StatusCodeError';
  statusCode: number;
  /** The response body (parsed JSON when `json` was set and it parses). */
  error: any;
  options: RequestOptions;
  response: FullResponse;
  /** `"rate_limited"` when the platform's 20 requests/s limit answered 429. */
  code?: string;
}

/** request-promise's TransformError: `options.transform` threw. */
export class TransformError extends Error {
  name: 'TransformError';
  cause: unknown;
  error: unknown;
  options: RequestOptions;
  response: FullResponse;
}

/** Like `require('request-promise/errors')`. */
export const errors: {
  RequestError: typeof RequestError;
  StatusCodeError: typeof StatusCodeError;
  TransformError: typeof TransformError;
};

// ------------------------------------------------------------------ HTTP

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';

/** The request-promise options this toolbelt honours. */
export interface RequestOptions {
  method?: HttpMethod | Lowercase<HttpMethod> | string;
  uri?: string | URL;
  url?: string | URL;
  /** Prefixed to a relative `uri`. */
  baseUrl?: string;
  /** Query parameters merged into the URL (`a[b]=c` for objects, `a[0]=x` for arrays). */
  qs?: Record<string, unknown>;
  /** Arrays in `qs` as `a=x&a=y`. */
  useQuerystring?: boolean;
  headers?: Record<string, string | number | string[]>;
  /** A string or Buffer; an object only with `json: true`. */
  body?: any;
  /** true: send `body` as JSON, ask for JSON, parse the answer when it parses. An object: that object is the body. */
  json?: boolean | object;
  /** Sent as application/x-www-form-urlencoded. */
  form?: Record<string, unknown> | string;
  /** Default true: a non-2xx status rejects with StatusCodeError. */
  simple?: boolean;
  /** Default false: resolve with the body only. */
  resolveWithFullResponse?: boolean;
  /** Milliseconds; also capped by what is left of the invocation's 30 s. */
  timeout?: number;
  /** null: the body is a Buffer. Otherwise the text encoding of the body (default utf8). */
  encoding?: BufferEncoding | null;
  /** Default true. */
  followRedirect?: boolean;
  /** Default 10 (the host's). */
  maxRedirects?: number;
  auth?: { user?: string; pass?: string; username?: string; password?: string } | { bearer: string | (() => string) };
  transform?: (body: any, response: FullResponse, resolveWithFullResponse: boolean) => any;
  transform2xxOnly?: boolean;
  [other: string]: unknown;
}

export interface FullResponse {
  statusCode: number;
  statusMessage: string;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: any;
  /** The final URL after redirects. */
  url: string;
  request: { uri: URL | { href: string }; method: string; href: string };
}

export type Callback = (error: Error | null, response?: FullResponse, body?: any) => void;

/** A request-promise compatible function: `httpClient(uri, options)` or `httpClient(options)`. */
export interface HTTPClient {
  (uri: string | URL, options?: RequestOptions, callback?: Callback): Promise<any>;
  (options: RequestOptions, callback?: Callback): Promise<any>;
  get(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  head(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  post(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  put(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  patch(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  delete(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  del(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  options(uri: string | URL | RequestOptions, options?: RequestOptions, callback?: Callback): Promise<any>;
  /** A client with these options as defaults. */
  defaults(options: RequestOptions): HTTPClient;
}

// ------------------------------------------------------------------ mTLS

/** The certificate is uploaded per account through the API and referenced by name. */
export interface MTLSConfig {
  /** Name of the account's uploaded certificate. */
  certificate?: string;
  /** Accepted as the name too (PEM contents are refused: upload them through the API). */
  cert?: string;
  key?: string;
  ca?: string;
}

export interface MTLSOptions {
  json?: boolean;
  timeout?: number;
  /** Accepted and ignored: server certificates are verified by the host. */
  allowSelfSigned?: boolean;
}

export interface MTLSResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: any;
}

/**
 * Two call shapes per verb:
 * - LivePerson's `post(url, headers?, body?, options?)` → {statusCode, headers, body} for any status;
 * - request-promise's `post(url, options)` → like HTTPClient (simple, resolveWithFullResponse, json),
 *   chosen when the only argument after the URL is an object of request-promise option names.
 */
export interface MTLSClient {
  get(url: string, headers?: Record<string, string>, body?: any, options?: MTLSOptions): Promise<MTLSResponse>;
  get(url: string, options: RequestOptions): Promise<any>;
  head(url: string, headers?: Record<string, string>, options?: MTLSOptions): Promise<MTLSResponse>;
  head(url: string, options: RequestOptions): Promise<any>;
  post(url: string, headers?: Record<string, string>, body?: any, options?: MTLSOptions): Promise<MTLSResponse>;
  post(url: string, options: RequestOptions): Promise<any>;
  put(url: string, headers?: Record<string, string>, body?: any, options?: MTLSOptions): Promise<MTLSResponse>;
  put(url: string, options: RequestOptions): Promise<any>;
  patch(url: string, headers?: Record<string, string>, body?: any, options?: MTLSOptions): Promise<MTLSResponse>;
  patch(url: string, options: RequestOptions): Promise<any>;
  delete(url: string, headers?: Record<string, string>, body?: any, options?: MTLSOptions): Promise<MTLSResponse>;
  delete(url: string, options: RequestOptions): Promise<any>;
  options(url: string, headers?: Record<string, string>, options?: MTLSOptions): Promise<MTLSResponse>;
  options(url: string, options: RequestOptions): Promise<any>;
}

// ------------------------------------------------------------------ secrets

export interface SecretEntry {
  /** `[A-Za-z0-9-_]`, 1 to 100 characters. */
  key: string;
  /** At most 16,384 characters. */
  value: string;
}

export interface SecretClient {
  readSecret(key: string): Promise<SecretEntry>;
  /** The secret must exist (create it in the console or API); last writer wins. */
  updateSecret(secret: SecretEntry): Promise<SecretEntry>;
}

// ------------------------------------------------------------------ context store

export interface ContextServiceClientConfig {
  /** Accepted and ignored: the host uses the invocation's account. */
  apiKey?: string;
  /** Accepted and ignored: the host uses the invocation's account. */
  accountId?: string;
}

export interface Namespace {
  name: string;
  createdAt: number;
  ttl?: number;
}

export type Properties = Record<string, unknown>;

/** Conversation Context Service V1. A missing sessionId means the session "__default__". */
export interface ContextServiceClient {
  createNamespace(namespace: string, options?: { ttl?: number }): Promise<{ namespace: string; createdAt: number }>;
  deleteNamespace(namespace: string): Promise<{ deleted: true }>;
  getListOfNamespaces(): Promise<Namespace[]>;
  setPropertiesInNamespace(namespace: string, properties: Properties, sessionId?: string, ttlSecond?: number): Promise<{ ok: true }>;
  updatePropertiesInNamespace(namespace: string, properties: Properties, sessionId?: string, ttlSecond?: number): Promise<{ ok: true }>;
  getAllPropertiesInSession(namespace: string, sessionId?: string): Promise<Properties>;
  getSelectedPropertiesInSession(namespace: string, propertyNames: string[], sessionId?: string): Promise<Properties>;
  /** null when the property is absent. */
  getPropertyInSession(namespace: string, propertyName: string, sessionId?: string): Promise<unknown>;
  deletePropertyInSession(namespace: string, propertyName: string, sessionId?: string): Promise<{ deleted: true }>;
  deleteSession(namespace: string, sessionId: string): Promise<{ deleted: true }>;
  /** Not available on this platform (rejects with NotAvailableError). */
  getListOfSessions(namespace: string): Promise<never>;
}

// ------------------------------------------------------------------ LivePerson APIs

export const LpServices: {
  readonly MSG_HIST: 'msgHist';
  readonly AGENT_VEP: 'agentVep';
  readonly ACCOUNT_CONFIG_READ_ONLY: 'accountConfigReadOnly';
  readonly ACCOUNT_CONFIG_READ_WRITE: 'accountConfigReadWrite';
  readonly ASYNC_MESSAGING: 'asyncMessaging';
  readonly ASYNC_MESSAGING_EN: 'asyncMessagingEnt';
  readonly ENG_HIST_DOMAIN: 'engHistDomain';
  readonly RTBF: 'rtbf';
  readonly AUDITLOG: 'auditlog';
  readonly SMT: 'smt';
  readonly PUSHER: 'pusher';
  readonly LE_DATA_REPORTING: 'leDataReporting';
  readonly MSG_EWT_API: 'msgEwtAPI';
  readonly MSDKGW: 'msdkgw';
};
export type LpService = (typeof LpServices)[keyof typeof LpServices];

export const SDETypes: {
  readonly CART: 'cart';
  readonly TRANSACTION: 'purchase';
  readonly VIEWED_PRODUCT: 'prodView';
  readonly CUSTOMER_INFO: 'ctmrinfo';
  readonly MARKETING_SOURCE: 'mrktInfo';
  readonly PERSONAL_INFO: 'personal';
  readonly LEAD: 'lead';
  readonly SERVICE_ACTIVITY: 'service';
  readonly VISITOR_ERROR: 'error';
  readonly SEARCHED_CONTENT: 'searchInfo';
};
export type SDEType = (typeof SDETypes)[keyof typeof SDETypes];

export const ConversationContentTypes: {
  readonly INFO: 'info';
  readonly SDES: 'sdes';
  readonly UNAUTH_SDES: 'unAuthSdes';
  readonly CAMPAIGN: 'campaign';
  readonly MESSAGE_RECORDS: 'messageRecords';
  readonly AGENT_PARTICIPANTS: 'agentParticipants';
  readonly AGENT_PARTICIPANTS_ACTIVE: 'agentParticipantsActive';
  readonly CONSUMER_PARTICIPANTS: 'consumerParticipants';
  readonly TRANSFERS: 'transfers';
  readonly INTERACTIONS: 'interactions';
  readonly MESSAGE_SCORES: 'messageScores';
  readonly MESSAGE_STATUSES: 'messageStatuses';
  readonly SKILL_CHANGES: 'skillChanges';
  readonly CONVERSATION_SURVEYS: 'conversationSurveys';
  readonly AGENT_PARTICIPANTS_LEAVE: 'agentParticipantsLeave';
  readonly COBROWSE_SESSIONS: 'coBrowseSessions';
  readonly SUMMARY: 'summary';
  readonly MONITORING: 'monitoring';
  readonly DIALOGS: 'dialogs';
  readonly RESPONSE_TIME: 'responseTime';
  readonly INTENTS: 'intents';
  readonly UNIQUE_INTENTS: 'uniqueIntents';
  readonly LATEST_AGENT_SURVEY: 'latestAgentSurvey';
  readonly PREVIOUSLY_SUBMITTED_AGENT_SURVEYS: 'previouslySubmittedAgentSurveys';
};
export type ConversationContentType = (typeof ConversationContentTypes)[keyof typeof ConversationContentTypes];

export interface LpClientOptions extends Omit<RequestOptions, 'uri' | 'url' | 'baseUrl'> {
  /** Accepted and ignored: the host always signs with `lp-faas-default-app-key`. */
  appKeySecretName?: string;
}

/**
 * LivePerson APIs by service name: the host resolves the domain through CSDS and signs
 * with OAuth1 from the account's `lp-faas-default-app-key` secret; no allowlist entry needed.
 * Resolves like HTTPClient (json, simple, resolveWithFullResponse).
 */
export interface LpClient {
  (method: HttpMethod | Lowercase<HttpMethod>, service: LpService | string, path: string, options?: LpClientOptions): Promise<any>;
  (service: LpService | string, path: string, options?: LpClientOptions): Promise<any>;
}

export interface CsdsClient {
  /** The domain of a LivePerson service for this account, e.g. "va.msghist.liveperson.net". */
  get(service: LpService | string): Promise<string>;
  /** Not available on this platform. */
  getAll(): Promise<never>;
}

export interface MessageRecord {
  type: string;
  messageData: { msg?: { text: string }; file?: { caption: string; relativePath?: string } };
  timeL: number;
  sentBy: string;
  [other: string]: unknown;
}

export interface ConversationRecord {
  info?: unknown;
  messageRecords?: MessageRecord[];
  sdes?: SDEsResponse;
  unAuthSdes?: SDEsResponse;
  [other: string]: unknown;
}

export interface Conversation {
  _metadata: object;
  conversationHistoryRecords: ConversationRecord[];
}

export interface KeywordScannerResult {
  message: string;
  sentTimestamp: number;
  sentBy: string;
  tag: string;
}

export interface ConversationUtil {
  /** Messaging Interactions API (service msgHist) via LpClient. */
  getConversationById(conversationId: string, contentToRetrieve?: (ConversationContentType | string)[]): Promise<Conversation>;
  scanConversationForKeywords(conversation: Conversation, keywords: string[]): KeywordScannerResult[];
}

export type SDE = { type: SDEType | string } & Record<string, unknown>;
export type SDEEvent = { serverTimeStamp: string } & Record<string, unknown>;
export interface SDEsResponse {
  events: SDEEvent[];
}

export interface SDEUtil {
  /** Authenticated and unauthenticated SDEs of a conversation, each sorted oldest first. Pure. */
  getSDEsFromConv(conversation: Conversation): { sdes: SDEsResponse; unAuthSdes: SDEsResponse };
  /** Engagement Attributes API (service smt) via LpClient. */
  addSDEs(sdes: SDE[], visitorId: string, sessionId: string): Promise<void>;
}

export interface GDPRUtil {
  /** The relativePath of every file shared in the conversation. Pure (an fnbus addition). */
  listConversationFiles(conversation: Conversation): string[];
  /** Not available on this platform (needs LivePerson's file storage). */
  replaceConversationFiles(...args: unknown[]): Promise<never>;
}

/** Every method rejects with NotAvailableError. */
export type UnavailableClient = Record<string, (...args: unknown[]) => Promise<never>>;

export class Toolbelt {
  static HTTPClient(): HTTPClient;
  static MTLSClient(config: MTLSConfig | string): MTLSClient;
  static LpClient(): LpClient;
  static SecretClient(): SecretClient;
  static ContextServiceClient(config?: ContextServiceClientConfig | string): ContextServiceClient;
  static CsdsClient(): CsdsClient;
  static ConversationUtil(apiKey?: string): ConversationUtil;
  static SDEUtil(): SDEUtil;
  static GDPRUtil(): GDPRUtil;
  /** Not available on this platform. */
  static SFClient(): UnavailableClient;
  /** Not available on this platform. */
  static OrchestratorClient(): UnavailableClient;
}

/** Round trip to the host: resolves with {pong: [payload]}. fnbus only. */
export function ping(payload?: unknown): Promise<{ pong: unknown[] }>;
