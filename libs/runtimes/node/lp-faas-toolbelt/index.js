'use strict';
// fnbus's stand-in for LivePerson's "lp-faas-toolbelt" package.
//
// Lambdas written for LivePerson Functions do
//     const { Toolbelt } = require("lp-faas-toolbelt");
// and create clients at the top of their code. Creating a client always works
// here, so such code still loads; calling a client that this platform does not
// provide yet fails with NotAvailableError, naming the client and the method.
// Clients that can be served by the host will be implemented over `call()`,
// which sends a `toolbelt_call` frame through the runner (see
// docs/runner-protocol.md); for now the only method is the built-in `ping`.

class ToolbeltError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ToolbeltError';
    this.code = code;
  }
}

class NotAvailableError extends ToolbeltError {
  constructor(what) {
    super('not_available', `lp-faas-toolbelt: ${what} is not available on this platform yet`);
    this.name = 'NotAvailableError';
  }
}

// Set by the runner; (method, args) => Promise of the host's answer.
let transport = null;

function attachTransport(fn) {
  transport = fn;
}

function call(method, args) {
  if (typeof transport !== 'function') {
    return Promise.reject(
      new ToolbeltError('unavailable', 'lp-faas-toolbelt: no runner is attached to serve toolbelt calls'),
    );
  }
  return transport(method, Array.isArray(args) ? args : []);
}

// Round trip to the host: resolves with {pong: [payload]}. Useful to check
// that the toolbelt channel works; not part of LivePerson's API.
function ping(payload) {
  return call('ping', payload === undefined ? [] : [payload]);
}

// Properties a client must not fake, so that `await client`, logging and
// serialising a client behave normally.
const PASS_THROUGH = new Set(['then', 'catch', 'finally', 'toJSON', 'constructor', 'inspect', 'valueOf', 'toString']);

function unavailableMethod(clientName, method) {
  return function unavailable() {
    return Promise.reject(new NotAvailableError(`Toolbelt.${clientName}().${method}()`));
  };
}

// A client object whose every method rejects with NotAvailableError. `methods`
// are the documented names (listed so that introspection shows them); any
// other name rejects the same way.
function unavailableClient(clientName, methods) {
  const target = {};
  for (const method of methods) target[method] = unavailableMethod(clientName, method);
  Object.defineProperty(target, 'toString', {
    value: () => `[lp-faas-toolbelt ${clientName} (not available)]`,
    enumerable: false,
  });
  return new Proxy(target, {
    get(obj, prop, receiver) {
      if (typeof prop === 'symbol' || PASS_THROUGH.has(prop) || prop in obj) {
        return Reflect.get(obj, prop, receiver);
      }
      return unavailableMethod(clientName, prop);
    },
  });
}

// A request-promise style function client (HTTPClient, LpClient).
function unavailableFunctionClient(clientName) {
  const fn = function unavailableClientCall() {
    return Promise.reject(new NotAvailableError(`Toolbelt.${clientName}()`));
  };
  for (const verb of ['get', 'head', 'post', 'put', 'patch', 'delete', 'del', 'options']) {
    fn[verb] = unavailableMethod(clientName, verb);
  }
  return fn;
}

const HTTP_VERBS = ['get', 'head', 'post', 'put', 'delete', 'options', 'patch'];

class Toolbelt {
  static HTTPClient() {
    return unavailableFunctionClient('HTTPClient');
  }

  static LpClient() {
    return unavailableFunctionClient('LpClient');
  }

  static SecretClient() {
    return unavailableClient('SecretClient', ['readSecret', 'updateSecret']);
  }

  static MTLSClient() {
    return unavailableClient('MTLSClient', HTTP_VERBS);
  }

  static ContextServiceClient() {
    return unavailableClient('ContextServiceClient', [
      'createNamespace',
      'deleteNamespace',
      'getListOfNamespaces',
      'setPropertiesInNamespace',
      'updatePropertiesInNamespace',
      'getAllPropertiesInSession',
      'getSelectedPropertiesInSession',
      'getPropertyInSession',
      'deletePropertyInSession',
      'deleteSession',
    ]);
  }

  static ConversationUtil() {
    return unavailableClient('ConversationUtil', ['getConversationById']);
  }

  static SDEUtil() {
    return unavailableClient('SDEUtil', []);
  }

  static GDPRUtil() {
    return unavailableClient('GDPRUtil', []);
  }

  static SFClient() {
    return unavailableClient('SFClient', []);
  }

  static OrchestratorClient() {
    return unavailableClient('OrchestratorClient', []);
  }

  static CsdsClient() {
    return unavailableClient('CsdsClient', ['get']);
  }
}

module.exports = {
  Toolbelt,
  ToolbeltError,
  NotAvailableError,
  ping,
  // Runner-facing; not for lambdas.
  _attachTransport: attachTransport,
  _call: call,
};
