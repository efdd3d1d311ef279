// Talking to the JSON API: every failure becomes an ApiError carrying the
// server's typed error ({error: {type, message, status}}), so the page can
// show what went wrong instead of swallowing it.

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

let loginWaiter = null;  // one login prompt at a time, shared by concurrent calls

async function errorFrom(response) {
  let type = "http_error";
  let message = `${response.status} ${response.statusText || "error"}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      type = body.error.type || type;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON (e.g. a proxy's page): keep the HTTP status line */ }
  return new ApiError(response.status, type, message);
}

// fetch + JSON + typed errors; on 401 asks for the token once, then retries.
export async function api(path, options = {}, retried = false) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", ...options });
  } catch (err) {
    throw new ApiError(0, "network_error", "cannot reach the Sightline server (is it still running?)");
  }
  if (response.status === 401 && !retried) {
    await askForToken();
    return api(path, options, true);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

// Why did an image URL fail?  <img> errors carry no body, so fetch it once.
export async function explainImageFailure(url) {
  try {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) return (await errorFrom(response)).message;
    return "the browser cannot display this image format";
  } catch (_) {
    return "cannot reach the server";
  }
}

function askForToken() {
  if (loginWaiter) return loginWaiter;
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  const input = document.getElementById("login-token");
  const error = document.getElementById("login-error");
  loginWaiter = new Promise((resolve, reject) => {
    const onSubmit = async (event) => {
      event.preventDefault();
      const response = await fetch("/api/session", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: input.value }),
      });
      if (!response.ok) {
        error.textContent = (await errorFrom(response)).message;
        error.hidden = false;
        input.select();
        return;
      }
      cleanup();
      dialog.close();
      resolve();
    };
    const onCancel = () => {
      cleanup();
      reject(new ApiError(401, "unauthorized", "an access token is required to use this server"));
    };
    const cleanup = () => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      loginWaiter = null;
      error.hidden = true;
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
  return loginWaiter;
}
