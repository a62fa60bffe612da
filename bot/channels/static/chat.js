// The sandbox chat page: one emulated person's private chat with the bot.
// Bot messages are built from the plain text + entities the emulator parsed out of the bot's
// HTML, element by element with text nodes (never parsing markup), so only Telegram's
// formatting can appear. User text is always a text node.
"use strict";

(() => {
  const ROLE_LABELS = {
    member: "Đoàn viên / Member",
    officer: "Cán bộ công đoàn / Officer",
    leader: "Lãnh đạo / Leader",
  };
  const SAFE_LINK = /^(https?:|tg:|mailto:)/i;

  const $ = (id) => document.getElementById(id);
  const els = {
    select: $("persona-select"),
    hint: $("persona-hint"),
    botName: $("bot-name"),
    messages: $("messages"),
    empty: $("empty-chat"),
    toast: $("toast"),
    error: $("error-bar"),
    menu: $("command-menu"),
    keyboard: $("reply-keyboard"),
    startBar: $("start-bar"),
    startButton: $("start-button"),
    composer: $("composer"),
    input: $("message-input"),
    send: $("send-button"),
    menuButton: $("menu-button"),
  };

  const state = {
    personas: [],
    userId: null,
    seq: 0,
    controller: null,
    rendered: new Map(), // message_id -> element
    generation: 0,
  };

  // ---- helpers --------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      headers: options.body ? { "Content-Type": "application/json" } : {},
      ...options,
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && (data.error || data.description)) || response.statusText;
      throw new Error(message);
    }
    return data;
  }

  function post(path, body) {
    return api(path, { method: "POST", body: JSON.stringify(body) });
  }

  function showError(message) {
    if (!message) {
      els.error.hidden = true;
      return;
    }
    els.error.textContent = `Lỗi / Error: ${message}`;
    els.error.hidden = false;
  }

  let toastTimer = null;
  function showToast(text, alert) {
    if (!text) return;
    els.toast.textContent = text;
    els.toast.classList.toggle("alert", Boolean(alert));
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { els.toast.hidden = true; }, alert ? 5000 : 2500);
  }

  function formatTime(unixSeconds) {
    const date = new Date(unixSeconds * 1000);
    return date.toLocaleTimeString("vi-VN", { hour: "2-digit", minute: "2-digit" });
  }

  function formatSize(bytes) {
    if (bytes === null || bytes === undefined) return "";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // ---- Telegram entities -> DOM ---------------------------------------------------------

  function entityElement(entity) {
    switch (entity.type) {
      case "bold": return el("b");
      case "italic": return el("i");
      case "underline": return el("u");
      case "strikethrough": return el("s");
      case "code": return el("code");
      case "pre": {
        const pre = el("pre");
        if (entity.language) pre.dataset.language = entity.language;
        return pre;
      }
      case "spoiler": {
        const span = el("span", { className: "spoiler", title: "Bấm để xem / Tap to reveal" });
        span.addEventListener("click", () => span.classList.add("revealed"));
        return span;
      }
      case "text_link": {
        const url = String(entity.url || "");
        if (!SAFE_LINK.test(url)) return el("span");
        return el("a", { href: url, target: "_blank", rel: "noopener noreferrer" });
      }
      case "blockquote": return el("blockquote");
      case "expandable_blockquote": {
        const quote = el("blockquote", { className: "expandable collapsed" });
        quote.addEventListener("click", () => quote.classList.toggle("collapsed"));
        return quote;
      }
      default: return el("span", { className: `entity-${String(entity.type).replace(/[^a-z_]/g, "")}` });
    }
  }

  // Entities use UTF-16 offsets, which is what JavaScript strings index by.
  function renderFormatted(text, entities) {
    const fragment = document.createDocumentFragment();
    const sorted = (entities || [])
      .filter((e) => Number.isInteger(e.offset) && Number.isInteger(e.length) && e.length > 0)
      .sort((a, b) => a.offset - b.offset || b.length - a.length);

    function build(start, end, list, parent) {
      let position = start;
      let i = 0;
      while (i < list.length) {
        const entity = list[i];
        const entityStart = Math.max(entity.offset, position);
        const entityEnd = Math.min(entity.offset + entity.length, end);
        if (entityStart > position) parent.append(text.slice(position, entityStart));
        const children = [];
        let j = i + 1;
        while (j < list.length && list[j].offset < entityEnd) {
          children.push(list[j]);
          j += 1;
        }
        if (entityEnd > entityStart) {
          const node = entityElement(entity);
          build(entityStart, entityEnd, children, node);
          parent.append(node);
          position = entityEnd;
        }
        i = j;
      }
      if (position < end) parent.append(text.slice(position, end));
    }

    build(0, text.length, sorted, fragment);
    return fragment;
  }

  // ---- messages -------------------------------------------------------------------------

  function renderInlineKeyboard(message) {
    if (!message.buttons || message.buttons.length === 0) return null;
    const keyboard = el("div", { className: "inline-keyboard", "data-testid": "inline-keyboard" });
    for (const row of message.buttons) {
      const rowNode = el("div", { className: "row" });
      for (const button of row) {
        if (button.url !== undefined) {
          const url = SAFE_LINK.test(button.url) ? button.url : undefined;
          rowNode.append(el("a", {
            className: "inline-button url-button",
            href: url,
            target: "_blank",
            rel: "noopener noreferrer",
            "data-testid": "inline-button",
          }, `${button.text} ↗`));
        } else if (button.callback_data !== undefined) {
          const node = el("button", {
            type: "button",
            className: "inline-button",
            "data-testid": "inline-button",
            dataset: { callbackData: button.callback_data, messageId: String(message.message_id) },
          }, button.text);
          node.addEventListener("click", () => press(node, message.message_id, button.callback_data));
          rowNode.append(node);
        } else {
          rowNode.append(el("button", { type: "button", className: "inline-button", disabled: true }, button.text));
        }
      }
      keyboard.append(rowNode);
    }
    return keyboard;
  }

  function renderMessage(message) {
    const who = message.from_bot ? "bot" : "user";
    const bubble = el("div", {
      className: `bubble ${who}`,
      "data-testid": `bubble-${who}`,
      dataset: { messageId: String(message.message_id) },
    });

    if (message.kind === "photo" && message.file) {
      bubble.append(el("img", { className: "photo", src: message.file.url, alt: "Ảnh / Photo" }));
    } else if (message.kind === "document" && message.file) {
      bubble.append(el("a", {
        className: "document",
        href: message.file.url,
        download: message.file.name || "file",
        "data-testid": "document",
      },
      el("span", { className: "icon" }, "📄"),
      el("span", {}, message.file.name || "tệp / file", el("br"),
        el("span", { className: "size" }, formatSize(message.file.size)))));
    } else if (message.kind === "sticker") {
      bubble.append(el("div", { className: "sticker" }, message.text));
    } else if (message.kind === "contact") {
      bubble.append(el("div", { className: "contact" }, `📇 ${message.text}`));
    }

    if (message.kind !== "sticker" && message.kind !== "contact" && message.text) {
      const body = el("div", { className: "text" });
      if (message.from_bot) body.append(renderFormatted(message.text, message.entities));
      else body.append(message.text);
      bubble.append(body);
    }

    const meta = el("span", { className: "meta" },
      message.edited ? "đã sửa / edited · " : "", formatTime(message.date));
    bubble.append(meta);

    const wrapper = el("div", {
      className: `message ${who}`,
      dataset: { messageId: String(message.message_id) },
    }, bubble);
    const keyboard = renderInlineKeyboard(message);
    if (keyboard) wrapper.append(keyboard);
    return wrapper;
  }

  function upsertMessage(message) {
    const node = renderMessage(message);
    const existing = state.rendered.get(message.message_id);
    if (existing) existing.replaceWith(node);
    else els.messages.append(node);
    state.rendered.set(message.message_id, node);
  }

  function removeMessage(messageId) {
    const existing = state.rendered.get(messageId);
    if (existing) existing.remove();
    state.rendered.delete(messageId);
  }

  function renderReplyKeyboard(rows) {
    els.keyboard.replaceChildren();
    if (!rows || rows.length === 0) {
      els.keyboard.hidden = true;
      return;
    }
    for (const row of rows) {
      const rowNode = el("div", { className: "row" });
      for (const button of row) {
        if (button.request_contact) {
          const node = el("button", {
            type: "button",
            id: "share-contact-button",
            className: "keyboard-button contact-button",
            "data-testid": "share-contact-button",
          }, button.text, el("span", { className: "en" }, "Chia sẻ số điện thoại / Share phone number"));
          node.addEventListener("click", shareContact);
          rowNode.append(node);
        } else {
          const node = el("button", {
            type: "button",
            className: "keyboard-button",
            "data-testid": "keyboard-button",
          }, button.text);
          node.addEventListener("click", () => sendText(button.text));
          rowNode.append(node);
        }
      }
      els.keyboard.append(rowNode);
    }
    els.keyboard.hidden = false;
  }

  function updateEmptyState() {
    const empty = state.rendered.size === 0;
    els.empty.hidden = !empty;
    els.startBar.hidden = !empty;
  }

  function scrollToBottom() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  // ---- actions ----------------------------------------------------------------------------

  async function sendText(text) {
    if (!text || !text.trim() || state.userId === null) return;
    showError(null);
    try {
      await post("/_sandbox/send", { user_id: state.userId, text });
    } catch (error) {
      showError(error.message);
    }
  }

  async function press(button, messageId, callbackData) {
    showError(null);
    button.disabled = true;
    try {
      await post("/_sandbox/press", {
        user_id: state.userId,
        message_id: messageId,
        callback_data: callbackData,
      });
    } catch (error) {
      showError(error.message);
    } finally {
      setTimeout(() => { button.disabled = false; }, 400);
    }
  }

  async function shareContact() {
    showError(null);
    try {
      await post("/_sandbox/contact", { user_id: state.userId });
    } catch (error) {
      showError(error.message);
    }
  }

  async function sendFile(file) {
    if (!file || state.userId === null) return;
    showError(null);
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    try {
      await post("/_sandbox/upload", {
        user_id: state.userId,
        filename: file.name,
        mime_type: file.type,
        data: btoa(binary),
      });
    } catch (error) {
      showError(error.message);
    }
  }

  async function toggleCommandMenu() {
    if (!els.menu.hidden) {
      els.menu.hidden = true;
      return;
    }
    try {
      const data = await api(`/_sandbox/commands?user_id=${encodeURIComponent(state.userId)}`);
      els.menu.replaceChildren();
      if (!data.commands.length) {
        els.menu.append(el("div", { className: "command-item" }, "Bot chưa đặt lệnh nào / No commands set"));
      }
      for (const command of data.commands) {
        const item = el("button", { type: "button", className: "command-item", "data-testid": "command-item" },
          el("span", { className: "name" }, `/${command.command}`),
          el("span", { className: "description" }, command.description));
        item.addEventListener("click", () => {
          els.menu.hidden = true;
          sendText(`/${command.command}`);
        });
        els.menu.append(item);
      }
      els.menu.hidden = false;
    } catch (error) {
      showError(error.message);
    }
  }

  // ---- polling ----------------------------------------------------------------------------

  function applyUpdate(data) {
    let changed = false;
    for (const event of data.events) {
      if ((event.type === "message" || event.type === "edit") && event.message) {
        upsertMessage(event.message);
        changed = true;
      } else if (event.type === "delete") {
        removeMessage(event.message_id);
      } else if (event.type === "answer" && event.answer) {
        showToast(event.answer.text, event.answer.show_alert);
      }
    }
    state.seq = Math.max(state.seq, data.seq);
    renderReplyKeyboard(data.reply_keyboard);
    updateEmptyState();
    if (changed) scrollToBottom();
  }

  async function pollLoop(generation) {
    let wait = 0;
    while (generation === state.generation) {
      state.controller = new AbortController();
      try {
        const url = `/_sandbox/messages?user_id=${encodeURIComponent(state.userId)}` +
          `&after=${state.seq}&wait=${wait}`;
        const data = await api(url, { signal: state.controller.signal });
        if (generation !== state.generation) return;
        applyUpdate(data);
        wait = 20;
      } catch (error) {
        if (generation !== state.generation || error.name === "AbortError") return;
        showError(`mất kết nối / connection lost (${error.message})`);
        await new Promise((resolve) => setTimeout(resolve, 1500));
        showError(null);
      }
    }
  }

  function selectPersona(userId) {
    state.generation += 1;
    if (state.controller) state.controller.abort();
    state.userId = userId;
    state.seq = 0;
    state.rendered.clear();
    els.messages.replaceChildren(els.empty);
    els.menu.hidden = true;
    renderReplyKeyboard(null);
    updateEmptyState();
    const persona = state.personas.find((p) => p.user_id === userId);
    els.hint.textContent = persona ? [persona.unit, persona.hint].filter(Boolean).join(" — ") : "";
    history.replaceState(null, "", `#user=${userId}`);
    pollLoop(state.generation);
  }

  async function init() {
    let data;
    try {
      data = await api("/_sandbox/personas");
    } catch (error) {
      showError(error.message);
      return;
    }
    state.personas = data.personas || [];
    if (data.bot) {
      els.botName.textContent = data.bot.first_name || data.bot.username;
      document.title = `${els.botName.textContent} — hộp cát / sandbox`;
    }
    els.select.replaceChildren();
    for (const persona of state.personas) {
      const role = ROLE_LABELS[persona.role] || persona.role || "";
      const label = [persona.name, role, persona.unit].filter(Boolean).join(" — ");
      els.select.append(el("option", { value: String(persona.user_id) }, label));
    }
    if (!state.personas.length) {
      els.select.append(el("option", { value: "" }, "Chưa có người dùng mẫu / No demo personas"));
      els.select.disabled = true;
      return;
    }
    const fromHash = Number((location.hash.match(/user=(\d+)/) || [])[1]);
    const initial = state.personas.some((p) => p.user_id === fromHash) ? fromHash : state.personas[0].user_id;
    els.select.value = String(initial);
    selectPersona(initial);
  }

  els.select.addEventListener("change", () => selectPersona(Number(els.select.value)));
  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = els.input.value;
    els.input.value = "";
    sendText(text);
    els.input.focus();
  });
  els.startButton.addEventListener("click", () => {
    const persona = state.personas.find((p) => p.user_id === state.userId);
    sendText(persona && persona.start ? `/start ${persona.start}` : "/start");
  });
  els.menuButton.addEventListener("click", toggleCommandMenu);
  const fileInput = document.getElementById("file-input");
  document.getElementById("attach-button").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    fileInput.value = "";
    sendFile(file);
  });

  init();
})();
