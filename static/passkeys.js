/* Gatehouse's passkeys page: the browser side of passkeys (WebAuthn), as an app writes it.
 *
 * Every call goes to Gatehouse's JSON API (the native one). Answers come as
 * {"code": "SUCCESS", "data": …}; errors as {"code": "PASSKEY_REJECTED", "message": "…", …}.
 * Every passkey ceremony has three steps:
 *   1. POST …/begin: the server's options, as JSON (binary fields in base64url);
 *   2. navigator.credentials.create() or .get(): the browser and the authenticator;
 *   3. POST the credential back, as JSON (…/finish, /auth/mfa/verify, /auth/reauthenticate).
 * The session's token is kept in sessionStorage (this tab only) and sent as Authorization.
 * An app on another origin lists that origin in GATEHOUSE_WEBAUTHN_ORIGINS (and in
 * GATEHOUSE_CORS_ORIGINS for its calls); its RP id is the domain in GATEHOUSE_WEBAUTHN_RP_ID.
 */
"use strict";

(() => {
  const TOKEN = "gatehouse.token";
  const $ = (id) => document.getElementById(id);

  // ---- base64url <-> bytes ---------------------------------------------------------------

  function toBase64url(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  // ---- the server's options -> what navigator.credentials takes -----------------------------
  // (PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON, where a
  // browser has them.)

  const descriptors = (list) => (list || []).map((d) => ({ ...d, id: fromBase64url(d.id) }));

  const creationOptions = (json) => ({
    ...json,
    challenge: fromBase64url(json.challenge),
    user: { ...json.user, id: fromBase64url(json.user.id) },
    excludeCredentials: descriptors(json.excludeCredentials), // passkeys the account has already
  });

  const requestOptions = (json) => ({
    ...json,
    challenge: fromBase64url(json.challenge),
    allowCredentials: descriptors(json.allowCredentials), // empty: the browser's passkey picker
  });

  // ---- the browser's credential -> the JSON the server takes (PublicKeyCredential.toJSON) ---

  function credentialJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      // A new passkey (create).
      response.attestationObject = toBase64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      // A signature with one (get). userHandle: whose passkey it is (the picker's answer).
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      if (r.userHandle) response.userHandle = toBase64url(r.userHandle);
    }
    const json = { id: credential.id, rawId: toBase64url(credential.rawId), type: credential.type, response };
    if (credential.authenticatorAttachment) json.authenticatorAttachment = credential.authenticatorAttachment;
    json.clientExtensionResults = credential.getClientExtensionResults();
    return json;
  }

  const newPasskey = async (options) =>
    credentialJSON(await navigator.credentials.create({ publicKey: creationOptions(options) }));
  const usePasskey = async (options) =>
    credentialJSON(await navigator.credentials.get({ publicKey: requestOptions(options) }));

  // ---- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, answer) {
      super(answer.message || `the server answered ${status}`);
      this.code = answer.code;
      this.answer = answer; // errors may carry more: "mfa" (a login's second step), "reauthenticate"
    }
  }

  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = token; // the raw token ("Bearer <token>" works too)
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await r.json().catch(() => ({ code: `HTTP_${r.status}`, message: "" }));
    if (!r.ok) throw new ApiError(r.status, answer);
    return answer.data;
  }

  // ---- what the page shows ------------------------------------------------------------------

  // The outcome of the last action: data-state says which (the tests wait on it), data-code why.
  function show(state, message, code) {
    const status = $("status");
    status.dataset.state = state;
    status.dataset.code = code || "";
    status.textContent = message;
  }

  // Refusals in words: the browser's (a DOMException's name) and the server's one answer for
  // every passkey it does not take (it never says which check failed). data-code keeps the name.
  const REFUSALS = {
    NotAllowedError: "No passkey was used: the prompt was cancelled or timed out, or none is saved here.",
    SecurityError: "This page may not use passkeys for this site (its address is not one the server allows).",
    InvalidStateError: "This authenticator holds a passkey for this account already.",
    PASSKEY_REJECTED:
      "The server did not accept the passkey (one it does not know, perhaps removed, an attempt too old, " +
      "or a page it does not allow): try again, or use your password.",
  };
  const SIGNED_OUT = ["NOT_AUTHENTICATED", "TOKEN_EXPIRED", "INVALID_TOKEN"];
  let mfaChallenge = null; // a password login's second step, while it is pending
  let retry = null; // the action a re-authentication lets through

  // Runs one action: "busy" while it does; a failure shown in words.
  async function run(action) {
    show("busy", "Working…");
    try {
      await action();
    } catch (error) {
      const code = error instanceof ApiError ? error.code : error.name; // the server's, or the browser's
      if (code === "REAUTHENTICATION_REQUIRED") return askToReauthenticate(action, error.answer.reauthenticate);
      if (SIGNED_OUT.includes(code)) signedOut();
      if (code === "MFA_CHALLENGE_INVALID") $("second-step").hidden = true; // expired or used up: log in again
      show("error", REFUSALS[code] || error.message || String(error), code);
    }
  }

  function signedIn(login) {
    // login: the answer of /auth/auth, /auth/mfa/verify, …/login/finish or /auth/me.
    sessionStorage.setItem(TOKEN, login.token);
    $("who").textContent = login.account.username || login.account.email || login.account.phone;
    $("aal").textContent = `aal${login.aal}`;
    $("amr").textContent = login.amr.join(" + ");
    $("signed-out").hidden = $("second-step").hidden = true;
    $("signed-in").hidden = false;
    mfaChallenge = null;
    return listPasskeys();
  }

  function signedOut() {
    sessionStorage.removeItem(TOKEN);
    for (const id of ["signed-in", "second-step", "recovery", "reauth"]) $(id).hidden = true;
    $("signed-out").hidden = false;
    $("password-form").reset();
  }

  async function listPasskeys() {
    const { passkeys } = await api("GET", "/auth/passkeys");
    const list = $("passkey-list");
    list.replaceChildren();
    for (const passkey of passkeys) {
      const row = $("passkey-row").content.firstElementChild.cloneNode(true);
      row.dataset.passkeyId = passkey.id;
      row.querySelector("input").value = passkey.name;
      const used = passkey.lastUsed ? new Date(passkey.lastUsed * 1000).toLocaleString() : "never";
      row.querySelector(".meta").textContent =
        `added ${new Date(passkey.created * 1000).toLocaleString()} · last used ${used}` +
        (passkey.backedUp ? " · synced" : "");
      list.append(row);
    }
    $("no-passkeys").hidden = passkeys.length > 0;
  }

  // ---- signing in ---------------------------------------------------------------------------

  async function passwordLogin(form) {
    const body = { username: value(form, "username"), password: value(form, "password") };
    try {
      await signedIn(await api("POST", "/auth/auth", body));
      show("signed-in", "Signed in.");
    } catch (error) {
      if (error.code !== "MFA_REQUIRED") throw error;
      // The password was right; the account has a second factor. A passkey finishes it.
      mfaChallenge = error.answer.mfa.challenge;
      $("second-step").hidden = false;
      $("second-passkey").hidden = !error.answer.mfa.factors.includes("webauthn");
      show("second-step", "Your password was right: now the second step.");
    }
  }

  async function secondStep(code) {
    let body = { challenge: mfaChallenge, code };
    if (code === undefined) {
      const options = (await api("POST", "/auth/passkeys/mfa/begin", { challenge: mfaChallenge })).options;
      body = { challenge: mfaChallenge, credential: await usePasskey(options) };
    }
    await signedIn(await api("POST", "/auth/mfa/verify", body));
    show("signed-in", "Signed in with two steps.");
  }

  async function passkeySignIn() {
    // No username: the options list no passkey, so the browser offers every passkey it has
    // for this site, and the one chosen says whose it is.
    const { options } = await api("POST", "/auth/passkeys/login/begin", {});
    await signedIn(await api("POST", "/auth/passkeys/login/finish", { credential: await usePasskey(options) }));
    show("signed-in", "Signed in with your passkey.");
  }

  async function logOut() {
    try {
      await api("POST", "/auth/logout", {});
    } finally {
      signedOut(); // whatever the server said: this tab forgets the token
    }
    show("signed-out", "Signed out.");
  }

  // ---- managing passkeys ----------------------------------------------------------------------

  async function addPasskey(form) {
    const { options } = await api("POST", "/auth/passkeys/register/begin", {});
    const credential = await newPasskey(options);
    const added = await api("POST", "/auth/passkeys/register/finish", { credential, name: value(form, "name") });
    if (added.recoveryCodes) {
      // The account's first second factor: its recovery codes, shown this once.
      $("recovery-codes").replaceChildren(
        ...added.recoveryCodes.map((code) => Object.assign(document.createElement("li"), { textContent: code })),
      );
      $("recovery").hidden = false;
    }
    $("aal").textContent = `aal${added.session.aal}`; // showing the passkey raised this session
    $("amr").textContent = added.session.amr.join(" + ");
    form.reset();
    await listPasskeys();
    show("added", `Passkey “${added.passkey.name}” added.`);
  }

  async function renamePasskey(id, name) {
    const { passkey } = await api("PATCH", `/auth/passkeys/${encodeURIComponent(id)}`, { name });
    await listPasskeys();
    show("renamed", `Passkey renamed “${passkey.name}”.`);
  }

  async function removePasskey(id) {
    await api("DELETE", `/auth/passkeys/${encodeURIComponent(id)}`);
    await listPasskeys();
    show("removed", "Passkey removed.");
  }

  // ---- authenticating again (adding or removing a factor needs a recent sign-in) ---------------

  function askToReauthenticate(action, needs) {
    retry = action;
    const factors = (needs && needs.factors) || []; // none: the password; else a second factor
    $("reauth-passkey").hidden = !factors.includes("webauthn");
    $("reauth-password-label").hidden = factors.length > 0;
    $("reauth-code-label").hidden = factors.length === 0;
    $("reauth").hidden = false;
    show("reauthenticate", "Confirm it is you to go on.", "REAUTHENTICATION_REQUIRED");
  }

  async function reauthenticate(body) {
    if (body === undefined) {
      const { options } = await api("POST", "/auth/passkeys/reauthenticate/begin", {});
      body = { credential: await usePasskey(options) };
    }
    const { session } = await api("POST", "/auth/reauthenticate", body);
    $("aal").textContent = `aal${session.aal}`;
    $("amr").textContent = session.amr.join(" + ");
    $("reauth").hidden = true;
    $("reauth-form").reset();
    const action = retry;
    retry = null;
    await action(); // and now what was asked
  }

  // ---- wiring ---------------------------------------------------------------------------------

  const value = (form, name) => form.elements.namedItem(name).value;

  function onSubmit(id, handler) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      run(() => handler(event.target));
    });
  }

  onSubmit("password-form", passwordLogin);
  onSubmit("code-form", (form) => secondStep(value(form, "code").trim()));
  onSubmit("add-form", (form) => addPasskey(form));
  onSubmit("reauth-form", (form) =>
    reauthenticate($("reauth-code-label").hidden ? { password: value(form, "password") } : { code: value(form, "code") }),
  );
  $("second-passkey").addEventListener("click", () => run(() => secondStep()));
  $("passkey-signin").addEventListener("click", () => run(passkeySignIn));
  $("reauth-passkey").addEventListener("click", () => run(() => reauthenticate()));
  $("logout").addEventListener("click", () => run(logOut));
  // The list's rows: one listener for all of them.
  $("passkey-list").addEventListener("submit", (event) => {
    event.preventDefault();
    const row = event.target.closest("li");
    run(() => renamePasskey(row.dataset.passkeyId, value(event.target, "name")));
  });
  $("passkey-list").addEventListener("click", (event) => {
    if (!event.target.classList.contains("remove")) return;
    run(() => removePasskey(event.target.closest("li").dataset.passkeyId));
  });

  // A reload keeps the tab signed in: the stored token, if the session is still alive.
  if (!window.PublicKeyCredential) {
    signedOut();
    show("error", "This browser has no passkeys (WebAuthn): use a password.", "UNSUPPORTED");
  } else if (sessionStorage.getItem(TOKEN)) {
    run(async () => {
      await signedIn(await api("GET", "/auth/me"));
      show("signed-in", "Signed in.");
    });
  } else {
    signedOut();
    show("signed-out", "Signed out.");
  }
})();
