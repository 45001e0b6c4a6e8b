"use strict";
// Follows the payment without a reload: polls ./<id>/status, switches the state shown (the
// states are all in the page; CSS shows the one named by main[data-status]), counts down to
// expiry by the server's clock, and copies the address. Only textContent is ever written.
(function () {
  var main = document.getElementById("checkout");
  var state = JSON.parse(document.getElementById("checkout-state").textContent);
  var statusUrl = encodeURIComponent(state.id) + "/status";
  var FINAL = { confirmed: true, canceled: true };
  var POLL_MS = 2500;
  var EXPIRED_POLL_MS = 10000;  // a transfer sent just before expiry may still be credited late
  var MAX_BACKOFF_MS = 30000;
  var deadline = 0;
  var delay = POLL_MS;
  var timer = null;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function formatLeft(seconds) {
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    return h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
  }

  function setText(name, value) {
    var nodes = main.querySelectorAll('[data-field="' + name + '"]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = value;
  }

  function show(s) {
    state = s;
    main.dataset.status = s.status;
    // Display only: "0" in asset units, "0.00" in a currency.
    main.dataset.partial = String(parseFloat(s.amount_received) > 0);
    main.dataset.paidLate = String(s.paid_late);
    main.dataset.refund = s.refund_status || "none";
    setText("amount_received", s.amount_received);
    setText("amount_remaining", s.amount_remaining);
    setText("confirmations_done", String(s.confirmations.done));
    setText("confirmations_required", String(s.confirmations.required));
    // Priced in fiat: what is still to send in each option's asset.
    var options = s.options || [];
    for (var i = 0; i < options.length; i++) {
      if (options[i].available) setText("remaining-" + i, options[i].amount_remaining);
    }
    deadline = Date.now() + s.expires_in * 1000;
    tick();
  }

  function tick() {
    var left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    document.getElementById("countdown").textContent = formatLeft(left);
    main.dataset.timeup = String(left === 0 && state.status === "pending");
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function poll() {
    fetch(statusUrl, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (s) {
        main.dataset.offline = "false";
        show(s);
        delay = POLL_MS;
        if (!FINAL[s.status]) schedule(s.status === "expired" ? EXPIRED_POLL_MS : POLL_MS);
      })
      .catch(function () {
        main.dataset.offline = "true";
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
        schedule(delay);
      });
  }

  // A copy that works where the async clipboard API does not (plain http, old browsers).
  function legacyCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function selectAddress() {
    var range = document.createRange();
    range.selectNodeContents(document.getElementById("address"));
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  var copyButton = document.getElementById("copy");
  var copyReset = null;
  function copied(ok) {
    copyButton.textContent = ok ? "Copied" : "Selected: copy it";
    if (!ok) selectAddress();
    clearTimeout(copyReset);
    copyReset = setTimeout(function () { copyButton.textContent = "Copy"; }, 2500);
  }
  copyButton.addEventListener("click", function () {
    var text = document.getElementById("address").textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { copied(true); },
        function () { copied(legacyCopy(text)); }
      );
    } else {
      copied(legacyCopy(text));
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !FINAL[state.status]) schedule(0);
  });

  show(state);
  setInterval(tick, 1000);
  if (!FINAL[state.status]) schedule(POLL_MS);
})();
