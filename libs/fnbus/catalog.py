"""The event catalogue of the original platform and the built-in templates.

Each event has its id, a display name, a function limit (how many productive
lambdas of one account may subscribe) and whether skill filters apply. Each
template is bound to one event (or to none) and runs as it is; its sample
payload is what a test invocation sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    limit: int | None  # None: unlimited
    skill_filter: bool = False


_MESSAGING = [
    ("controllerbot_messaging_new_conversation", "Messaging New Conversation"),
    ("controllerbot_messaging_participants_change", "Messaging Participants Change"),
    ("controllerbot_messaging_ttr", "Messaging TTR"),
    ("controllerbot_messaging_conversation_idle", "Messaging Conversation Idle"),
    ("controllerbot_messaging_conversation_routing", "Messaging Conversation Routing"),
    ("controllerbot_messaging_mid_conversation_msg", "Messaging Line in Off-Hours"),
    ("controllerbot_messaging_conversation_end", "Messaging Conversation End"),
]

EVENTS: dict[str, Event] = {
    **{eid: Event(eid, name, 1, skill_filter=True) for eid, name in _MESSAGING},
    "surveybot_messaging_survey_started": Event(
        "surveybot_messaging_survey_started", "Messaging Survey Started", 1, skill_filter=True
    ),
    "surveybot_messaging_survey_ended": Event(
        "surveybot_messaging_survey_ended", "Messaging Survey Ended", 1, skill_filter=True
    ),
    "conversational_command": Event("conversational_command", "Conversational Command", 30),
    "bot_connectors_custom_integration": Event(
        "bot_connectors_custom_integration", "Third-Party Bots Custom Integration", 15
    ),
    "bot_connectors_pre_hook": Event("bot_connectors_pre_hook", "Third-Party Bots Pre-Hook", 15),
    "bot_connectors_post_hook": Event("bot_connectors_post_hook", "Third-Party Bots Post-Hook", 15),
    "bot_connectors_error_hook": Event(
        "bot_connectors_error_hook", "Third-Party Bots Error-Hook", 15
    ),
    "denver_post_survey_email_transcript": Event(
        "denver_post_survey_email_transcript", "Chat Post Survey E-Mail Transcript", 10
    ),
}


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    event_id: str | None
    runtime: str
    code: str
    sample_payload: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_CONVERSATION = {
    "conversationId": "3e7b0f5a-2c1d-4f7e-9a55-0d1c2b3a4f5e",
    "skillId": "12345",
    "brandId": "demo",
    "participants": [{"id": "consumer-1", "role": "CONSUMER"}],
}


def _node(body: str) -> str:
    return "function lambda(input, callback) {\n" + body + "}\n"


_MESSAGING_BODY = """    // input.payload carries the conversation; answer with the actions to take.
    const { conversationId } = input.payload || {};
    console.info(`conversation ${conversationId}`);
    callback(null, [{ type: "systemMessage", text: "Welcome!" }]);
"""

TEMPLATES: dict[str, Template] = {}


def _add(t: Template) -> None:
    TEMPLATES[t.id] = t


_add(Template(
    "hello-world", "Hello World", None, "nodejs",
    _node('    callback(null, `Hello World`);\n'),
    {"name": "fnbus"}, "Returns a greeting; bound to no event.",
))
_add(Template(
    "hello-world-python", "Hello World (Python)", None, "python",
    "def handler(input):\n    return \"Hello World\"\n",
    {"name": "fnbus"}, "The Python runtime's greeting; bound to no event.",
))
for _eid, _name in _MESSAGING:
    _add(Template(
        _eid, f"{_name} template", _eid, "nodejs", _node(_MESSAGING_BODY),
        {"headers": [], "payload": dict(_CONVERSATION)},
        f"Reacts to '{_name}' with a system message.",
    ))
for _eid in ("surveybot_messaging_survey_started", "surveybot_messaging_survey_ended"):
    _add(Template(
        _eid, f"{EVENTS[_eid].name} template", _eid, "nodejs",
        _node('    console.info("survey event");\n    callback(null, { ok: true });\n'),
        {"headers": [], "payload": {**_CONVERSATION, "surveyId": "7"}},
    ))
_add(Template(
    "conversational_command", "Conversational Command template", "conversational_command",
    "nodejs",
    _node('    const { command } = input.payload || {};\n'
          '    callback(null, { text: `command ${command} received` });\n'),
    {"headers": [], "payload": {"command": "help", "conversationId": _CONVERSATION["conversationId"]}},
))
for _eid in ("bot_connectors_custom_integration", "bot_connectors_pre_hook",
             "bot_connectors_post_hook", "bot_connectors_error_hook"):
    _add(Template(
        _eid, f"{EVENTS[_eid].name} template", _eid, "nodejs",
        _node("    // Pass the message through unchanged.\n"
              "    callback(null, input.payload);\n"),
        {"headers": [], "payload": {"message": "hello", "conversationId": "c-1"}},
    ))
_add(Template(
    "denver_post_survey_email_transcript", "Post Survey E-Mail Transcript template",
    "denver_post_survey_email_transcript", "nodejs",
    _node('    callback(null, { subject: "Your transcript", to: input.payload.email });\n'),
    {"headers": [], "payload": {"email": "visitor@example.com", "transcript": []}},
))

# Toolbelt examples (docs/toolbelt.md); bound to no event, invoked directly.
_CRM_LOOKUP = """\
async function lambda(input, callback) {
  // Looks a customer up in a CRM over HTTPS with a token from the secret store.
  // Before deploying: create the secret "crm-api-token" and allowlist
  // crm.example.com (or point the URL at your own CRM and allowlist that).
  const { Toolbelt } = require("lp-faas-toolbelt");
  const httpClient = Toolbelt.HTTPClient();
  const secretClient = Toolbelt.SecretClient();

  const { customerId } = input.payload || {};
  if (!customerId) {
    return callback(null, { found: false, reason: "payload.customerId is missing" });
  }
  try {
    const { value: token } = await secretClient.readSecret("crm-api-token");
    const customer = await httpClient(
      `https://crm.example.com/api/customers/${encodeURIComponent(customerId)}`,
      { method: "GET", headers: { Authorization: `Bearer ${token}` }, json: true, timeout: 5000 },
    );
    return callback(null, { found: true, customer });
  } catch (error) {
    if (error.statusCode === 404) {
      return callback(null, { found: false, reason: `no customer ${customerId}` });
    }
    // not allowlisted, secret missing, timeout, 5xx...: say why instead of failing
    console.error(`CRM lookup failed: ${error.message}`);
    return callback(null, { found: false, reason: error.message });
  }
}
"""

_CONTEXT_COUNTER = """\
async function lambda(input, callback) {
  // Counts how often it was invoked per conversation, in the context store
  // (namespace "visits", kept for a day). Another lambda, a bot or an external
  // system can read the same counter through the context API.
  const { Toolbelt } = require("lp-faas-toolbelt");
  const contextClient = Toolbelt.ContextServiceClient({ accountId: process.env.BRAND_ID });
  const namespace = "visits";
  const sessionId = (input.payload && input.payload.conversationId) || undefined;

  try {
    await contextClient.createNamespace(namespace, { ttl: 86400 });
    const previous = await contextClient.getPropertyInSession(namespace, "count", sessionId);
    const count = (Number(previous) || 0) + 1;
    await contextClient.setPropertiesInNamespace(namespace, { count, lastSeen: Date.now() }, sessionId);
    return callback(null, { conversationId: sessionId || "__default__", count });
  } catch (error) {
    console.error(`context store: ${error.message}`);
    return callback(error);
  }
}
"""

_add(Template(
    "crm-lookup", "CRM lookup (HTTP client + secret)", None, "nodejs", _CRM_LOOKUP,
    {"headers": [], "payload": {"customerId": "42"}},
    "Fetches a customer from a CRM over HTTPS with a bearer token read from the secret store; "
    "needs the secret crm-api-token and an allowlisted CRM domain.",
))
_add(Template(
    "context-counter", "Conversation counter (context store)", None, "nodejs", _CONTEXT_COUNTER,
    {"headers": [], "payload": {"conversationId": _CONVERSATION["conversationId"]}},
    "Counts invocations per conversation in the context store (namespace visits).",
))


def event_or_none(event_id: str | None) -> Event | None:
    return EVENTS.get(event_id) if event_id else None
