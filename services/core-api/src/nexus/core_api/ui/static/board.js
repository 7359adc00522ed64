// Drag a board card to another column: posts the same form the card's buttons post (CSRF included);
// the server (the task state machine) decides, and a refusal's reason is shown. Buttons remain for
// the keyboard and for browsers without JavaScript. Listeners sit on the document, so they outlive
// the lanes' re-reads; a re-read waits while a card is being dragged.
(function () {
  let dragged = null;
  const columns = () => document.querySelectorAll("#lanes .column");
  const say = (text, ok) => {
    const box = document.getElementById("board-message");
    box.textContent = text;
    box.className = ok ? "hint" : "error";
  };
  document.addEventListener("dragstart", (e) => {
    const card = e.target.closest && e.target.closest("article.board-card[draggable=true]");
    if (!card) return;
    dragged = card;
    e.dataTransfer.setData("text/plain", card.dataset.task);
    e.dataTransfer.effectAllowed = "move";
    const moves = (card.dataset.moves || "").split(" ");
    const lane = card.closest(".lane");
    lane.querySelectorAll(".column").forEach((c) => c.classList.toggle("can-drop", moves.includes(c.dataset.column)));
  });
  document.addEventListener("dragend", () => {
    dragged = null;
    columns().forEach((c) => c.classList.remove("can-drop", "drop-over"));
  });
  document.addEventListener("dragover", (e) => {
    const col = dragged && e.target.closest && e.target.closest(".column");
    if (!col || col.dataset.column === dragged.dataset.column) return;
    e.preventDefault(); // a drop anywhere is sent: the server's answer is the rule, not this page's guess
    columns().forEach((c) => c.classList.toggle("drop-over", c === col));
  });
  document.addEventListener("drop", async (e) => {
    const col = dragged && e.target.closest && e.target.closest(".column");
    if (!col) return;
    e.preventDefault();
    const card = dragged;
    const form = new FormData();
    form.append("_csrf", document.body.dataset.csrf);
    form.append("column", col.dataset.column);
    form.append("goal_id", card.closest(".lane").dataset.goalFilter || "");
    const r = await fetch(`/ui/board/cards/${encodeURIComponent(card.dataset.task)}/move`, {
      method: "POST", body: form, headers: { "X-CSRF-Token": document.body.dataset.csrf },
    });
    if (r.ok) {
      say(`Moved “${card.dataset.title}” to ${col.dataset.title}.`, true);
    } else {
      const page = new DOMParser().parseFromString(await r.text(), "text/html");
      const why = page.querySelector("[role=alert]");
      say(`${r.status}: ${why ? why.textContent.trim() : r.statusText}`, false);
    }
    htmx.trigger("#lanes", "board-reread");
  });
  document.addEventListener("htmx:beforeSwap", (e) => {
    if (dragged && e.detail.target && e.detail.target.id === "lanes") e.detail.shouldSwap = false;
  });
})();
