module mp3converter/functions/upload

go 1.26
