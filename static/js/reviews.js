/* Review console: keyboard shortcuts, and refusals shown where they happen.
   The pages work without this file (Tab and Enter, plain form posts). */
(function () {
  "use strict";

  // a: the Approve button, e: the edit box, r: the reason for rejecting. Focus only: Enter decides.
  var shortcuts = { a: "review-approve", e: "edit-output", r: "reject-reason" };

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    var element = document.getElementById(shortcuts[event.key] || "");
    if (!element) return;
    event.preventDefault();
    element.focus();
  });

  // htmx 2 swaps no 4xx answer by default; a 409 (decided meanwhile) or a 422 (invalid edit,
  // missing reason) carries the message to show, in place of the panel that sent it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    var target = event.detail.target;
    if ((status === 409 || status === 422) && target && target.closest("[data-swap-errors]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
