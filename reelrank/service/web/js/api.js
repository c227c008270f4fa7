// The HTTP API as the pages call it: JSON in and out, bearer tokens, one error type.

import { session } from './session.js';

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const err = body && body.error;
    super(err ? err.message : (fallback || `HTTP ${status}`));
    this.status = status;
    this.code = err ? err.code : `http_${status}`;
    this.details = err && Array.isArray(err.details) ? err.details : [];
  }

  // What to show a person: the message plus the fields the server named.
  get explanation() {
    const fields = this.details.map((d) => `${d.field}: ${d.message}`).join('; ');
    return fields ? `${this.message} (${fields})` : this.message;
  }
}

export async function api(method, path, { as = 'user', query, body, keepalive = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined) url.searchParams.set(key, String(value));
  }
  const headers = { Accept: 'application/json' };
  const token = session.token(as);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, keepalive };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, text.slice(0, 200));
  return data;
}

export const get = (path, options) => api('GET', path, options);
export const post = (path, body, options = {}) => api('POST', path, { ...options, body });
export const put = (path, body, options = {}) => api('PUT', path, { ...options, body });
export const del = (path, options) => api('DELETE', path, options);

export function userPath(suffix = '') {
  return `/v1/users/${encodeURIComponent(session.userId)}${suffix}`;
}

export function newId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
