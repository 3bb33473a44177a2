// Placeholder so the target builds while its module is written; removed when real files land.
